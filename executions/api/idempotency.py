"""``Idempotency-Key`` for POST endpoints: a retried request (same user, same key, same
method, path and body) gets the first response back instead of doing the work twice.

Only successful (2xx) responses are kept, for 24 hours. An error response is not stored, so
a retry after fixing nothing gets the same error afresh, and one refused by back-pressure
(429, 503) can simply be retried. The same key with a different request is 422; a retry
while the first request is still running is 409.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from django.contrib.auth.models import User
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from executions import services

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"


class KeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"


class KeyInProgress(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_key_in_progress"


def _fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    text = f"{request.method} {request.get_full_path()}\n{body}"
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def idempotent(request: Request, handle: Callable[[], Response]) -> Response:
    """Run ``handle`` once per key, replaying its response to retries."""
    key = request.headers.get(HEADER)
    if key is None:
        return handle()
    assert isinstance(request.user, User)
    claim = services.idempotency_claim(
        user=request.user,
        key=key,
        fingerprint=_fingerprint(request),
    )
    if claim.replay is not None:
        code, body = claim.replay
        return Response(body, status=code, headers={REPLAY_HEADER: "true"})
    if claim.conflict:
        if claim.in_progress:
            raise KeyInProgress(claim.conflict)
        raise KeyReused(claim.conflict)
    assert claim.record_id is not None
    try:
        response = handle()
    except BaseException:
        services.idempotency_release(claim.record_id)
        raise
    if 200 <= response.status_code < 300:
        services.idempotency_store(claim.record_id, response.status_code, response.data)
    else:
        services.idempotency_release(claim.record_id)
    return response
