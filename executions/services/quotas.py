"""Quotas and back-pressure: whether one more execution may be queued.

``QuotaExceeded`` (one user's limit, answered with 429) and ``QueueFull`` (the platform's
queue, answered with 503) are ``ValidationError`` subclasses, raised before anything is
stored.
"""

from __future__ import annotations

import math
from datetime import timedelta

from django.contrib.auth.models import User
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils import timezone

from executions.conf import execution_settings
from executions.models import ACTIVE_STATUSES, Execution, Status, UserQuota

QUOTA_WINDOW = timedelta(hours=24)
# A concurrent slot frees when a run ends; runs are short, so ask the client to retry soon.
CONCURRENT_RETRY_AFTER_S = 5


class QuotaExceeded(ValidationError):
    """A user's quota refuses another execution.

    Raised as a non-field error (``{"__all__": [message]}``) so forms and the API show it
    above the input. ``code`` is ``quota_concurrent`` or ``quota_per_day``; ``limit`` names the
    ``UserQuota`` field and ``value`` its effective value; ``retry_after_s`` estimates when a
    slot frees, or is None when none will (a limit of 0).
    """

    def __init__(
        self, message: str, *, code: str, limit: str, value: int, retry_after_s: int | None
    ) -> None:
        super().__init__({NON_FIELD_ERRORS: [ValidationError(message, code=code)]})
        self.code = code
        self.limit = limit
        self.value = value
        self.retry_after_s = retry_after_s


class QueueFull(ValidationError):
    """The platform's queue holds ``EXECUTIONS["MAX_QUEUE_DEPTH"]`` executions already.

    A non-field error like ``QuotaExceeded``, but about the whole platform rather than one
    user: the API answers it with 503. ``retry_after_s`` is a hint for when to try again.
    """

    def __init__(self, message: str, *, depth: int, retry_after_s: int) -> None:
        super().__init__({NON_FIELD_ERRORS: [ValidationError(message, code="queue_full")]})
        self.code = "queue_full"
        self.depth = depth
        self.retry_after_s = retry_after_s


def queue_depth_check(adding: int = 1) -> None:
    """Raise ``QueueFull`` if ``adding`` more queued executions would pass the global cap."""
    cap = execution_settings.MAX_QUEUE_DEPTH
    depth = Execution.objects.filter(status=Status.QUEUED).count()
    if depth + adding > cap:
        raise QueueFull(
            f"The platform is busy: {depth} executions are waiting (the limit is {cap}). "
            "Try again shortly.",
            depth=depth,
            retry_after_s=int(execution_settings.QUEUE_FULL_RETRY_AFTER_S),
        )


def _quota_check(*, owner_id: int) -> None:
    """Raise ``QuotaExceeded`` if one more execution would break the quota of the user who
    owns the evaluation (whoever requests the run, it is their workload that grows).

    Call inside the transaction that creates the execution: the lock on the owner's row makes
    concurrent requests of one user take turns, so two of them cannot both pass the count.
    """
    User.objects.select_for_update().filter(pk=owner_id).first()
    queue_depth_check()
    quota = UserQuota.objects.filter(user_id=owner_id).first() or UserQuota(user_id=owner_id)
    theirs = Execution.objects.filter(evaluation__owner_id=owner_id)
    since = timezone.now() - QUOTA_WINDOW
    per_day = quota.effective_max_per_day
    today = theirs.filter(queued_at__gte=since).count()
    if today >= per_day:
        retry_after_s = None
        if per_day > 0:
            # The window frees a slot when the (today - per_day + 1)-th oldest run leaves it.
            freeing = (
                theirs.filter(queued_at__gte=since)
                .order_by("queued_at")
                .values_list("queued_at", flat=True)[today - per_day]
            )
            retry_after_s = max(1, math.ceil((freeing - since).total_seconds()))
        raise QuotaExceeded(
            f"Daily limit reached: at most {per_day} executions in 24 hours (max_per_day).",
            code="quota_per_day",
            limit="max_per_day",
            value=per_day,
            retry_after_s=retry_after_s,
        )
    concurrent = quota.effective_max_concurrent
    if theirs.filter(status__in=ACTIVE_STATUSES).count() >= concurrent:
        raise QuotaExceeded(
            f"Concurrency limit reached: at most {concurrent} executions queued or running "
            "at once (max_concurrent). Wait for one to finish or cancel one.",
            code="quota_concurrent",
            limit="max_concurrent",
            value=concurrent,
            retry_after_s=CONCURRENT_RETRY_AFTER_S if concurrent > 0 else None,
        )
