"""HMAC-SHA256 request signing shared by the execution service and the remote backend.

Standard library only. A signature covers the method, the path (with query string), a
timestamp, a nonce and the SHA-256 of the body, so a captured request cannot be altered,
replayed after ``MAX_SKEW_S`` or replayed within it (the verifier remembers nonces).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

TIMESTAMP_HEADER = "X-Evalplatform-Timestamp"
NONCE_HEADER = "X-Evalplatform-Nonce"
SIGNATURE_HEADER = "X-Evalplatform-Signature"
MAX_SKEW_S = 60
MIN_SECRET_LENGTH = 32


class Headers(Protocol):
    """A ``dict`` or an ``http.client.HTTPMessage`` (whose ``get`` ignores case)."""

    def get(self, name: str, /) -> str | None: ...


class SigningError(Exception):
    """A request's signature is missing, malformed, wrong, expired or replayed."""


def load_secret(environ: Mapping[str, str] | None = None) -> str:
    """The shared secret from ``EXECUTION_SERVICE_SECRET`` or the file named by ``..._FILE``.

    Raises ``ValueError`` when it is missing or shorter than ``MIN_SECRET_LENGTH``.
    """
    environ = os.environ if environ is None else environ
    secret = environ.get("EXECUTION_SERVICE_SECRET")
    if secret is None and environ.get("EXECUTION_SERVICE_SECRET_FILE"):
        secret = Path(environ["EXECUTION_SERVICE_SECRET_FILE"]).read_text().strip()
    check_secret(secret or "")
    return secret or ""


def check_secret(secret: str) -> None:
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            "EXECUTION_SERVICE_SECRET (or EXECUTION_SERVICE_SECRET_FILE) must hold a shared "
            f"secret of at least {MIN_SECRET_LENGTH} characters; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )


def _signature(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    message = "\n".join(
        [method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest()]
    ).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    """The headers that authenticate one request (``path`` includes any query string)."""
    timestamp = str(int(time.time()))
    nonce = secrets.token_hex(16)
    return {
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: _signature(secret, method, path, timestamp, nonce, body),
    }


class Verifier:
    """Checks signatures and remembers the nonces seen within the allowed clock skew."""

    def __init__(self, secret: str, max_skew_s: int = MAX_SKEW_S) -> None:
        check_secret(secret)
        self.secret = secret
        self.max_skew_s = max_skew_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def verify(self, method: str, path: str, headers: Headers, body: bytes) -> None:
        """Return if the request is authentic and fresh; raise ``SigningError`` otherwise."""
        timestamp = headers.get(TIMESTAMP_HEADER) or ""
        nonce = headers.get(NONCE_HEADER) or ""
        signature = headers.get(SIGNATURE_HEADER) or ""
        if not (timestamp and nonce and signature):
            raise SigningError("missing signature headers")
        if not (timestamp.isdigit() and 8 <= len(nonce) <= 64 and nonce.isalnum()):
            raise SigningError("malformed signature headers")
        expected = _signature(self.secret, method, path, timestamp, nonce, body)
        if not hmac.compare_digest(expected, signature):
            raise SigningError("bad signature")
        now = time.time()
        if abs(now - int(timestamp)) > self.max_skew_s:
            raise SigningError(f"signature timestamp outside the {self.max_skew_s} s window")
        with self._lock:
            for old, expires in list(self._seen.items()):
                if expires < now:
                    del self._seen[old]
            if nonce in self._seen:
                raise SigningError("replayed request (nonce already seen)")
            self._seen[nonce] = now + 2 * self.max_skew_s
