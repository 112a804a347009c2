"""Request signing between the platform and the execution service: what the signature
covers, and every way the verifier refuses a request. No server, no Docker: the functions."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from sandbox import signing

SECRET = "k" * 40
BODY = b'{"x":1}'
PATH = "/v1/runs/run-1?wait=1"
TIMESTAMP = "1700000000"
NONCE = "0123456789abcdef"
# HMAC-SHA256(SECRET, "PUT\n{PATH}\n{TIMESTAMP}\n{NONCE}\n{sha256(BODY) hex}"), computed once.
VECTOR = "9246d9e44ae444d4da78cf0b4e60fbdcd2d6ebe40e2749220bbbf73bc6db0560"


def headers(signature: str = VECTOR, timestamp: str = TIMESTAMP, nonce: str = NONCE) -> dict:
    return {
        signing.TIMESTAMP_HEADER: timestamp,
        signing.NONCE_HEADER: nonce,
        signing.SIGNATURE_HEADER: signature,
    }


@pytest.fixture
def at_vector_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing.time, "time", lambda: float(TIMESTAMP) + 1)


def test_the_signature_is_the_documented_hmac() -> None:
    message = "\n".join(["PUT", PATH, TIMESTAMP, NONCE, hashlib.sha256(BODY).hexdigest()])
    expected = hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()
    assert expected == VECTOR
    assert signing._signature(SECRET, "put", PATH, TIMESTAMP, NONCE, BODY) == VECTOR


@pytest.mark.parametrize(
    "changed",
    [
        {"method": "POST"},
        {"path": "/v1/runs/run-2?wait=1"},
        {"path": "/v1/runs/run-1"},
        {"timestamp": "1700000001"},
        {"nonce": "0123456789abcdee"},
        {"body": b'{"x":2}'},
        {"secret": "j" * 40},
    ],
)
def test_every_part_of_the_request_changes_the_signature(changed: dict) -> None:
    parts = {
        "secret": SECRET,
        "method": "PUT",
        "path": PATH,
        "timestamp": TIMESTAMP,
        "nonce": NONCE,
        "body": BODY,
        **changed,
    }
    assert signing._signature(**parts) != VECTOR


def test_sign_makes_headers_the_verifier_accepts_once() -> None:
    verifier = signing.Verifier(SECRET)
    made = signing.sign(SECRET, "PUT", PATH, BODY)
    assert set(made) == {signing.TIMESTAMP_HEADER, signing.NONCE_HEADER, signing.SIGNATURE_HEADER}
    assert (
        made[signing.NONCE_HEADER] != signing.sign(SECRET, "PUT", PATH, BODY)[signing.NONCE_HEADER]
    ), "every request gets a fresh nonce"
    assert len(made[signing.NONCE_HEADER]) == 32, "128 random bits"
    verifier.verify("PUT", PATH, made, BODY)
    with pytest.raises(signing.SigningError) as refused:
        verifier.verify("PUT", PATH, made, BODY)
    assert str(refused.value) == "replayed request (nonce already seen)"


def test_a_request_without_a_body_is_signed_over_the_empty_body() -> None:
    made = signing.sign(SECRET, "GET", "/v1/health")
    signing.Verifier(SECRET).verify("GET", "/v1/health", made, b"")


def test_the_vector_verifies_at_its_time(at_vector_time: None) -> None:
    signing.Verifier(SECRET).verify("PUT", PATH, headers(), BODY)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", PATH, BODY), ("PUT", "/v1/runs/run-2?wait=1", BODY), ("PUT", PATH, b"{}")],
)
def test_a_signature_for_another_request_is_refused(
    at_vector_time: None, method: str, path: str, body: bytes
) -> None:
    with pytest.raises(signing.SigningError, match="bad signature"):
        signing.Verifier(SECRET).verify(method, path, headers(), body)


MISSING = "missing signature headers"
MALFORMED = "malformed signature headers"
BAD = "bad signature"


def without(name: str) -> dict:
    return {key: value for key, value in headers().items() if key != name}


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({}, MISSING),
        (without(signing.TIMESTAMP_HEADER), MISSING),
        (without(signing.NONCE_HEADER), MISSING),
        (without(signing.SIGNATURE_HEADER), MISSING),
        (headers(timestamp="17e8"), MALFORMED),
        (headers(timestamp="-1700000000"), MALFORMED),
        (headers(nonce="short"), MALFORMED),
        (headers(nonce="n" * 65), MALFORMED),
        (headers(nonce="0123456789abcde/"), MALFORMED),
        (headers(signature="0" * 64), BAD),
        (headers(signature=VECTOR.upper()), BAD),
    ],
)
def test_missing_malformed_and_wrong_headers_are_refused(
    at_vector_time: None, given: dict, reason: str
) -> None:
    with pytest.raises(signing.SigningError) as refused:
        signing.Verifier(SECRET).verify("PUT", PATH, given, BODY)
    assert str(refused.value) == reason


def test_nonces_of_8_and_64_characters_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing.time, "time", lambda: float(TIMESTAMP))
    for nonce in ("a" * 8, "b" * 64):
        signature = signing._signature(SECRET, "PUT", PATH, TIMESTAMP, nonce, BODY)
        signing.Verifier(SECRET).verify("PUT", PATH, headers(signature, nonce=nonce), BODY)


@pytest.mark.parametrize(("offset", "fresh"), [(60, True), (-60, True), (61, False), (-61, False)])
def test_only_timestamps_within_the_skew_are_fresh(
    monkeypatch: pytest.MonkeyPatch, offset: int, fresh: bool
) -> None:
    monkeypatch.setattr(signing.time, "time", lambda: float(TIMESTAMP) + offset)
    verifier = signing.Verifier(SECRET, max_skew_s=60)
    if fresh:
        verifier.verify("PUT", PATH, headers(), BODY)
    else:
        with pytest.raises(signing.SigningError, match="outside the 60 s window"):
            verifier.verify("PUT", PATH, headers(), BODY)


def test_a_nonce_is_remembered_for_twice_the_skew(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [float(TIMESTAMP)]
    monkeypatch.setattr(signing.time, "time", lambda: clock[0])
    verifier = signing.Verifier(SECRET, max_skew_s=60)
    verifier.verify("PUT", PATH, headers(), BODY)
    # Still inside the window: the same request is a replay however late it comes.
    clock[0] += 59
    with pytest.raises(signing.SigningError, match="replayed"):
        verifier.verify("PUT", PATH, headers(), BODY)
    # Past twice the skew the nonce is forgotten, and the timestamp is refused instead.
    clock[0] = float(TIMESTAMP) + 121
    with pytest.raises(signing.SigningError, match="outside"):
        verifier.verify("PUT", PATH, headers(), BODY)
    now = str(int(clock[0]))
    fresh = signing._signature(SECRET, "PUT", PATH, now, "f" * 16, BODY)
    verifier.verify("PUT", PATH, headers(fresh, timestamp=now, nonce="f" * 16), BODY)
    assert set(verifier._seen) == {"f" * 16}, "expired nonces are dropped: memory stays bounded"


def test_a_refused_request_does_not_burn_its_nonce(at_vector_time: None) -> None:
    verifier = signing.Verifier(SECRET)
    with pytest.raises(signing.SigningError):
        verifier.verify("PUT", PATH, headers(signature="0" * 64), BODY)
    verifier.verify("PUT", PATH, headers(), BODY)


@pytest.mark.parametrize("secret", ["", "s" * 31])
def test_short_secrets_are_refused(secret: str) -> None:
    message = (
        "EXECUTION_SERVICE_SECRET (or EXECUTION_SERVICE_SECRET_FILE) must hold a shared secret "
        "of at least 32 characters; generate one with: "
        "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
    )
    for refuse in (
        signing.Verifier,
        lambda s: signing.load_secret({"EXECUTION_SERVICE_SECRET": s}),
    ):
        with pytest.raises(ValueError) as refused:
            refuse(secret)
        assert str(refused.value) == message


def test_the_secret_is_read_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXECUTION_SERVICE_SECRET_FILE", raising=False)
    monkeypatch.setenv("EXECUTION_SERVICE_SECRET", "p" * 32)
    assert signing.load_secret() == "p" * 32


def test_the_secret_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert signing.load_secret({"EXECUTION_SERVICE_SECRET": "s" * 32}) == "s" * 32
    path = tmp_path / "secret"
    path.write_text("f" * 40 + "\n")
    assert signing.load_secret({"EXECUTION_SERVICE_SECRET_FILE": str(path)}) == "f" * 40
    # The variable wins over the file.
    both = {"EXECUTION_SERVICE_SECRET": "e" * 32, "EXECUTION_SERVICE_SECRET_FILE": str(path)}
    assert signing.load_secret(both) == "e" * 32
    with pytest.raises(ValueError):
        signing.load_secret({})


def test_a_replay_at_the_last_moment_its_timestamp_is_fresh_is_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The longest a request stays replayable: first seen when its timestamp is a full skew
    ahead of the verifier's clock, replayed when it is a full skew behind. The nonce must
    still be remembered then (it is kept for twice the skew, inclusive)."""
    clock = [float(TIMESTAMP) - 60]
    monkeypatch.setattr(signing.time, "time", lambda: clock[0])
    verifier = signing.Verifier(SECRET, max_skew_s=60)
    verifier.verify("PUT", PATH, headers(), BODY)
    clock[0] = float(TIMESTAMP) + 60
    with pytest.raises(signing.SigningError) as refused:
        verifier.verify("PUT", PATH, headers(), BODY)
    assert str(refused.value) == "replayed request (nonce already seen)"
