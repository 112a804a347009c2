"""Delivery of the ``execution.ended`` webhook: the payload, each attempt, and its retries.

The first attempt is queued when an execution ends; each is recorded as a
``WebhookDelivery``; a failed one is retried with exponential backoff,
``EXECUTIONS["WEBHOOK_MAX_ATTEMPTS"]`` attempts in all.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from datetime import timedelta
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from executions.conf import execution_settings
from executions.models import Execution, WebhookDelivery
from executions.webhooks.secrets import webhook_secret_for
from executions.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from executions.webhooks.transport import Refused, post, resolve_target

logger = logging.getLogger(__name__)

EVENT = "execution.ended"


def payload(execution: Any) -> dict[str, Any]:
    """The JSON body of an ``execution.ended`` delivery. Only what the owner may see: no
    test case contents and no program output (fetch the evaluation for those)."""
    return {
        "event": EVENT,
        "evaluation_id": execution.evaluation_id,
        "execution_id": execution.pk,
        "attempt": execution.attempt,
        "status": execution.status,
        "verdict": execution.verdict,
        "score": None if execution.score is None else str(execution.score),
        "error_kind": execution.error_kind,
        "finished_at": execution.finished_at.isoformat() if execution.finished_at else None,
    }


def execution_ended(execution_id: int) -> None:
    """Queue the first delivery for an execution that just ended, if its evaluation has a
    callback URL. Called by the services after commit; never raises into them."""
    try:
        if Execution.objects.filter(pk=execution_id).exclude(evaluation__callback_url="").exists():
            _enqueue(execution_id, 1)
    except Exception:
        logger.exception("Could not queue the webhook of execution %s", execution_id)


def _enqueue(execution_id: int, attempt: int, delay_s: int = 0) -> None:
    from django_q.models import Schedule
    from django_q.tasks import async_task, schedule

    name = f"webhook-{execution_id}-{attempt}"
    if delay_s <= 0:
        async_task("executions.tasks.deliver_webhook", execution_id, attempt, task_name=name)
        return
    schedule(
        "executions.tasks.deliver_webhook",
        execution_id,
        attempt,
        name=name,
        schedule_type=Schedule.ONCE,
        repeats=1,
        next_run=timezone.now() + timedelta(seconds=delay_s),
    )


def backoff_s(attempt: int) -> int:
    """Delay before attempt ``attempt + 1``: the base doubling each time (10 s, 20 s, 40 s…)."""
    return int(execution_settings.WEBHOOK_BACKOFF_S * 2 ** (attempt - 1))


def deliver(execution_id: int, attempt: int) -> Any:
    """Make attempt ``attempt`` of an execution's webhook, record it, and schedule the next
    one if it failed and attempts remain. Returns the ``WebhookDelivery``, or None when there
    is nothing to do (no callback URL, or this attempt was already made)."""
    execution = Execution.objects.select_related("evaluation__owner").filter(pk=execution_id)
    found = execution.first()
    if found is None or not found.evaluation.callback_url:
        return None
    url = found.evaluation.callback_url
    try:
        delivery = WebhookDelivery.objects.create(execution=found, url=url, attempt=attempt)
    except IntegrityError:
        logger.info("Webhook attempt %s of execution %s was already made.", attempt, execution_id)
        return None
    body = json.dumps(payload(found), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    secret = webhook_secret_for(found.evaluation.owner)
    headers = {
        "X-Evalplatform-Event": EVENT,
        "X-Evalplatform-Delivery": f"{execution_id}-{attempt}",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    started = time.monotonic()
    status_code: int | None = None
    error = ""
    retry = True
    try:
        target = resolve_target(url)
        answer = post(target, body, headers, execution_settings.WEBHOOK_TIMEOUT_S)
        status_code = answer.status_code
        if not 200 <= status_code < 300:
            error = f"The receiver answered {status_code}."
            if 300 <= status_code < 400:
                error += " Redirects are not followed."
    except Refused as exc:
        error = f"Refused: {exc}"
        retry = False  # the same address check would refuse every retry
    except (OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}"
    delivery.duration_ms = int((time.monotonic() - started) * 1000)
    delivery.status_code = status_code
    delivery.succeeded = not error
    delivery.error = error
    if error and retry and attempt < execution_settings.WEBHOOK_MAX_ATTEMPTS:
        delay = backoff_s(attempt)
        delivery.next_retry_at = timezone.now() + timedelta(seconds=delay)
        _enqueue(execution_id, attempt + 1, delay)
    delivery.save(
        update_fields=["duration_ms", "status_code", "succeeded", "error", "next_retry_at"]
    )
    return delivery
