"""``Idempotency-Key`` for POST endpoints: a retried request (same user, same key, same
method, path and body) gets the first response back instead of doing the work twice.

Only successful (2xx) responses are kept, for 24 hours. An error response is not stored, so
a retry after fixing nothing gets the same error afresh, and one refused by back-pressure
(429, 503) can simply be retried. The same key with a different request is 422.

The work, its response and the key's record commit in one transaction: a request cut short
anywhere (the database restarting under it) leaves nothing behind, neither its work nor a key
stuck "in progress", so it is answered 503 truthfully and its retry does the work. A retry
while the first request is still being handled waits on the key's row and gets its response.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from executions.models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"


class KeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"


class KeyInProgress(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_key_in_progress"


IDEMPOTENCY_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class IdempotencyClaim:
    """What ``idempotency_claim`` found: ``replay`` holds the stored (status, body) of an
    earlier identical request; ``conflict`` says why the key cannot be used; neither means
    the caller owns the key now and must call ``idempotency_store`` or
    ``idempotency_release``."""

    record_id: int | None = None
    replay: tuple[int, Any] | None = None
    conflict: str = ""
    in_progress: bool = False


def idempotency_claim(*, user: User, key: str, fingerprint: str) -> IdempotencyClaim:
    """Reserve ``key`` for this request, or report the earlier response or a conflict.

    Race-safe: the unique (user, key) constraint lets exactly one concurrent request create
    the record; the others read it. Keys older than 24 hours are forgotten.
    """
    if not key or len(key) > 255:
        raise ValidationError({"Idempotency-Key": "Give 1 to 255 characters."})
    IdempotencyKey.objects.filter(
        user=user, key=key, created_at__lt=timezone.now() - IDEMPOTENCY_TTL
    ).delete()
    try:
        with transaction.atomic():
            record = IdempotencyKey.objects.create(user=user, key=key, fingerprint=fingerprint)
        return IdempotencyClaim(record_id=record.pk)
    except IntegrityError:
        pass
    existing = IdempotencyKey.objects.filter(user=user, key=key).first()
    if existing is None:  # expired and deleted by a concurrent request in between
        return IdempotencyClaim(conflict="Idempotency-Key was just reused; retry the request.")
    if existing.fingerprint != fingerprint:
        return IdempotencyClaim(
            conflict="This Idempotency-Key was already used for a different request "
            "(another path or body). Use a new key for a new request."
        )
    if existing.status_code is None:
        return IdempotencyClaim(
            conflict="A request with this Idempotency-Key is still being handled; "
            "retry when it has finished.",
            in_progress=True,
        )
    return IdempotencyClaim(replay=(existing.status_code, existing.response))


def idempotency_store(record_id: int, status_code: int, response: Any) -> None:
    IdempotencyKey.objects.filter(pk=record_id).update(status_code=status_code, response=response)


def idempotency_release(record_id: int) -> None:
    """Forget a claimed key whose request should be retried for real (e.g. refused by
    back-pressure, or failed inside the platform)."""
    IdempotencyKey.objects.filter(pk=record_id, status_code__isnull=True).delete()


def _fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    text = f"{request.method} {request.get_full_path()}\n{body}"
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def idempotent(request: Request, handle: Callable[[], Response]) -> Response:
    """Run ``handle`` once per key, replaying its response to retries. ``handle`` runs in a
    transaction, with the key's record when there is a key: it is answered 2xx only once
    everything it did can commit, and nothing of it stays when it fails."""
    key = request.headers.get(HEADER)
    if key is None:
        with transaction.atomic():
            return handle()
    assert isinstance(request.user, User)
    with transaction.atomic():
        claim = idempotency_claim(
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
        response = handle()
        if 200 <= response.status_code < 300:
            idempotency_store(claim.record_id, response.status_code, response.data)
        else:
            idempotency_release(claim.record_id)
        return response
