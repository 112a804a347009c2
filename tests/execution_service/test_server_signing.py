"""The execution service's HTTP server refusing requests unsigned, wrongly signed or replayed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sandbox import signing

from .stub_service import SECRET, Node, body_of, error_of, make_session

# -- signing at the door


ROUTES = [
    ("GET", "/v1/health"),
    ("PUT", "/v1/sessions/run-1"),
    ("GET", "/v1/sessions/run-1?after=0&wait=1"),
    ("DELETE", "/v1/sessions/run-1"),
    ("GET", "/v1/no-such-route"),
    ("GET", "/v1/sessions/-bad-id"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_an_unsigned_request_is_401_before_anything_else(
    node: Node, method: str, path: str
) -> None:
    """Not 400 for the junk body, not 404 for the route: nothing is revealed unsigned."""
    answer = node.call(method, path, b"{not json", headers={})
    assert answer.status_code == 401
    assert error_of(answer) == "unauthenticated: missing signature headers"
    assert node.backend.health_calls == 0
    assert node.backend.received == [] and node.backend.cancelled == []
    assert node.service.sessions == {}


def test_a_request_signed_with_another_secret_is_401(node: Node) -> None:
    answer = node.call("PUT", "/v1/sessions/run-1", body_of(make_session()), secret="y" * 40)
    assert answer.status_code == 401
    assert error_of(answer) == "unauthenticated: bad signature"
    assert node.service.sessions == {}


@pytest.mark.parametrize(
    ("signed_for", "sent"),
    [
        (("PUT", "/v1/sessions/run-2", b"{}"), ("PUT", "/v1/sessions/run-1", b"{}")),
        (("PUT", "/v1/sessions/run-1", b"{}"), ("PUT", "/v1/sessions/run-1", b"{ }")),
        (("GET", "/v1/sessions/run-1?wait=0"), ("GET", "/v1/sessions/run-1?wait=30")),
        (("GET", "/v1/sessions/run-1?after=0"), ("GET", "/v1/sessions/run-1?after=5")),
        (("GET", "/v1/sessions/run-1"), ("DELETE", "/v1/sessions/run-1")),
    ],
)
def test_a_signature_for_another_request_is_401(
    node: Node, signed_for: tuple[Any, ...], sent: tuple[Any, ...]
) -> None:
    """Method, path, query string and body are all covered by the signature."""
    method, path, *body = signed_for
    headers = signing.sign(SECRET, method, path, body[0] if body else b"")
    method, path, *body = sent
    answer = node.call(method, path, body[0] if body else b"", headers=headers)
    assert answer.status_code == 401
    assert error_of(answer) == "unauthenticated: bad signature"


def signed_at(timestamp: int, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    nonce = "0123456789abcdef"
    return {
        signing.TIMESTAMP_HEADER: str(timestamp),
        signing.NONCE_HEADER: nonce,
        signing.SIGNATURE_HEADER: signing._signature(
            SECRET, method, path, str(timestamp), nonce, body
        ),
    }


@pytest.mark.parametrize("offset", [-120, 120])
def test_a_stale_or_future_timestamp_is_401(node: Node, offset: int) -> None:
    headers = signed_at(int(time.time()) + offset, "GET", "/v1/health")
    answer = node.call("GET", "/v1/health", headers=headers)
    assert answer.status_code == 401
    assert error_of(answer) == "unauthenticated: signature timestamp outside the 60 s window"
    assert node.backend.health_calls == 0


def test_a_timestamp_within_the_skew_is_accepted(node: Node) -> None:
    headers = signed_at(int(time.time()) - 30, "GET", "/v1/health")
    assert node.call("GET", "/v1/health", headers=headers).status_code == 200


def test_a_replayed_request_is_401_even_for_an_idempotent_put(node: Node) -> None:
    body = body_of(make_session())
    headers = signing.sign(SECRET, "PUT", "/v1/sessions/run-1", body)
    assert node.call("PUT", "/v1/sessions/run-1", body, headers=headers).status_code == 202
    replay = node.call("PUT", "/v1/sessions/run-1", body, headers=headers)
    assert replay.status_code == 401
    assert error_of(replay) == "unauthenticated: replayed request (nonce already seen)"
    # Signed afresh, the same body is the idempotent retry it should be.
    assert node.put(make_session()).status_code == 200


def test_a_replayed_cancel_is_401(node: Node) -> None:
    node.backend.gate.clear()
    assert node.put(make_session()).status_code == 202
    headers = signing.sign(SECRET, "DELETE", "/v1/sessions/run-1")
    assert node.call("DELETE", "/v1/sessions/run-1", headers=headers).status_code == 200
    replay = node.call("DELETE", "/v1/sessions/run-1", headers=headers)
    assert replay.status_code == 401
    assert node.backend.cancelled == ["run-1"]
