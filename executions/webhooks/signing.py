"""Signatures of webhook bodies: ``sign`` for deliveries, ``verify_signature`` for receivers.

HMAC-SHA256 over ``f"{timestamp}.{body}"``, keyed with the owner's secret. Standard library
only, so receivers may copy ``verify_signature`` as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Evalplatform-Signature"
TIMESTAMP_HEADER = "X-Evalplatform-Timestamp"
# A receiver's clock may differ a little; older signatures are refused as replays.
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Evalplatform-Signature`` value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when ``signature`` (the ``X-Evalplatform-Signature`` header) was made with
    ``secret`` over this exact ``body`` and ``timestamp`` header, and the timestamp is within
    ``tolerance_s`` of now. Compares in constant time. Receivers may copy this function: it
    needs only the standard library."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except (TypeError, ValueError):
        return False
    if age > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
