"""The webhook signature against a fixed test vector, for ``executions.webhooks`` and for the
copy of ``verify_signature`` docs/api.md tells receivers to paste: both must accept exactly
what the documented format, ``sha256=`` + hex HMAC-SHA256 keyed with the secret over
``f"{timestamp}.{body}"``, signs, and only within the tolerance."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import pytest

from executions import webhooks
from tests.api.conftest import api_doc_blocks

SECRET = "whsec-test-vector"
TIMESTAMP = "1700000000"
BODY = b'{"event":"execution.ended"}'
SIGNATURE = "sha256=39d804dc2b0b233b31ed2b14e78df1babac076a9fe9935e2a25554cc3898310b"

Verify = Callable[..., bool]


def documented_verify_signature() -> Verify:
    """docs/api.md's ``verify_signature``, run as a receiver would run it."""
    [code] = api_doc_blocks("Webhooks", "python")
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/api.md, Webhooks", "exec"), namespace)  # noqa: S102 (our docs)
    verify: Verify = namespace["verify_signature"]
    return verify


@pytest.fixture(params=["executions.webhooks", "docs/api.md"])
def verify(request: pytest.FixtureRequest) -> Verify:
    return (
        webhooks.verify_signature
        if request.param == "executions.webhooks"
        else documented_verify_signature()
    )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Sets what ``time.time()`` answers, for both copies (the documented one has no ``now``)."""
    return lambda now: monkeypatch.setattr(time, "time", lambda: float(now))


def test_the_vector_is_the_documented_hmac() -> None:
    """The constant is checked here with the standard library alone, not with ``sign()``."""
    digest = hmac.new(SECRET.encode(), f"{TIMESTAMP}.".encode() + BODY, hashlib.sha256)
    assert "sha256=" + digest.hexdigest() == SIGNATURE


def test_sign_makes_the_vector() -> None:
    assert webhooks.sign(SECRET, TIMESTAMP, BODY) == SIGNATURE
    assert webhooks.sign(SECRET, int(TIMESTAMP), BODY) == SIGNATURE


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(0, True), (300, True), (-300, True), (301, False), (-301, False), (86_400, False)],
)
def test_the_timestamp_must_be_within_the_tolerance(
    verify: Verify, clock: Callable[[int], None], offset: int, accepted: bool
) -> None:
    """300 s either way: an old signature is a replay, one from the future is as suspect."""
    clock(int(TIMESTAMP) + offset)
    assert verify(SECRET, BODY, TIMESTAMP, SIGNATURE) is accepted


@pytest.mark.parametrize(
    ("secret", "body", "timestamp", "signature"),
    [
        ("whsec-test-vectoR", BODY, TIMESTAMP, SIGNATURE),
        ("", BODY, TIMESTAMP, SIGNATURE),
        (SECRET, BODY + b" ", TIMESTAMP, SIGNATURE),
        (SECRET, b'{"event":"execution.started"}', TIMESTAMP, SIGNATURE),
        (SECRET, b"", TIMESTAMP, SIGNATURE),
        (SECRET, BODY, "1700000001", SIGNATURE),
        (SECRET, BODY, TIMESTAMP, SIGNATURE.removeprefix("sha256=")),
        (SECRET, BODY, TIMESTAMP, SIGNATURE[:-1] + "a"),
        (SECRET, BODY, TIMESTAMP, ""),
    ],
)
def test_anything_changed_is_refused(
    verify: Verify,
    clock: Callable[[int], None],
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
) -> None:
    clock(int(timestamp) if timestamp.isdigit() else int(TIMESTAMP))
    assert verify(SECRET, BODY, TIMESTAMP, SIGNATURE) is True  # the vector itself passes
    assert verify(secret, body, timestamp, signature) is False


@pytest.mark.parametrize("timestamp", ["soon", "", "1700000000.0", "0x6553f100", "1.7e9"])
def test_a_malformed_timestamp_is_refused(
    verify: Verify, clock: Callable[[int], None], timestamp: str
) -> None:
    """Refused, not raised, even when the signature over it is right."""
    clock(int(TIMESTAMP))
    assert verify(SECRET, BODY, timestamp, webhooks.sign(SECRET, timestamp, BODY)) is False


def test_old_signatures_are_refused() -> None:
    body = b"{}"
    signature = webhooks.sign("s", 1000, body)
    assert webhooks.verify_signature("s", body, "1000", signature, now=1100)
    assert not webhooks.verify_signature("s", body, "1000", signature, now=2000)
    assert not webhooks.verify_signature("s", body, "soon", signature)
