"""Reads shared by the pages, the API and admin."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery

from executions.backends import BACKENDS, Selection, active_selection, get_backend
from executions.backends.base import Health, Isolation
from executions.models import (
    ACTIVE_STATUSES,
    Evaluation,
    Execution,
    Runtime,
    Status,
    TestResult,
)


def runtimes_enabled() -> QuerySet[Runtime]:
    return Runtime.objects.filter(enabled=True)


def evaluations_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Evaluation]:
    """Staff see every evaluation; everyone else sees their own."""
    evaluations = Evaluation.objects.select_related("runtime", "owner")
    if getattr(user, "is_staff", False):
        return evaluations
    return evaluations.filter(owner_id=user.pk)


def evaluation_list(
    user: AbstractBaseUser | AnonymousUser,
    *,
    status: str = "",
    verdict: str = "",
    runtime: str = "",
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    ordering: str = "-created_at",
) -> QuerySet[Evaluation]:
    """Evaluations the user may see, each annotated with its latest attempt's status,
    verdict and score (one query whatever the page size), optionally filtered by those and
    by creation time, ordered by ``ordering`` (``[-]created_at`` or ``[-]id``)."""
    latest = Execution.objects.filter(evaluation=OuterRef("pk")).order_by("-attempt")
    evaluations = (
        evaluations_visible_to(user)
        .annotate(
            latest_status=Subquery(latest.values("status")[:1]),
            latest_verdict=Subquery(latest.values("verdict")[:1]),
            latest_score=Subquery(latest.values("score")[:1]),
            attempts=Count("executions", distinct=True),
        )
        .order_by(ordering, "-id" if ordering.startswith("-") else "id")
    )
    if created_after:
        evaluations = evaluations.filter(created_at__gte=created_after)
    if created_before:
        evaluations = evaluations.filter(created_at__lt=created_before)
    if status:
        evaluations = evaluations.filter(latest_status=status)
    if verdict:
        evaluations = evaluations.filter(latest_verdict=verdict)
    if runtime:
        evaluations = evaluations.filter(runtime__name=runtime)
    return evaluations


def queue_position(execution: Execution) -> int | None:
    """1 for the next queued execution to start, None when it is not queued."""
    if execution.status != Status.QUEUED:
        return None
    ahead = Execution.objects.filter(status=Status.QUEUED, queued_at__lt=execution.queued_at)
    return ahead.count() + 1


def evaluation_detail(user: AbstractBaseUser | AnonymousUser, pk: int) -> Evaluation:
    """The evaluation with its test cases and every execution's results.

    Raises ``Evaluation.DoesNotExist`` when it does not exist or the user may not see it.
    """
    results = TestResult.objects.select_related("test_case")
    executions = Execution.objects.order_by("-attempt").prefetch_related(
        Prefetch("results", queryset=results)
    )
    return (
        evaluations_visible_to(user)
        .prefetch_related("test_cases", Prefetch("executions", queryset=executions))
        .get(pk=pk)
    )


def execution_for_user(user: AbstractBaseUser | AnonymousUser, pk: int) -> Execution:
    return Execution.objects.select_related("evaluation").get(
        pk=pk, evaluation__in=evaluations_visible_to(user)
    )


def can_see_hidden_cases(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(getattr(user, "is_staff", False))


# Backend health, for the admin's operator console ------------------------------------------

# A backend whose engine or cluster hangs must not hang the admin page with it.
BACKEND_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class BackendOverview:
    """One backend as the operator sees it. ``health_error`` / ``describe_error`` hold what
    went wrong instead of raising, so one broken backend cannot break the page."""

    name: str
    active: bool
    selection_reason: str
    health: Health | None
    health_error: str
    isolation: Isolation | None
    describe_error: str


def backends_overview(timeout_s: float = BACKEND_PROBE_TIMEOUT_S) -> list[BackendOverview]:
    """Every known backend (``fake`` only when active; a dotted-path active backend too) with
    its ``health()`` and ``describe()``, the active one first.

    Never raises: an exception, or a probe slower than ``timeout_s`` in all, is reported in
    the row's ``*_error`` field. Probes run in parallel threads, which are left to finish on
    their own when they overrun.
    """
    try:
        selection: Selection | None = active_selection()
        active_error = ""
    except Exception as exc:
        selection, active_error = None, f"Could not choose a backend: {_describe_error(exc)}"
    active = selection.name if selection else ""
    names = [name for name in BACKENDS if name != "fake" or name == active]
    if active and active not in names:
        names.append(active)
    names.sort(key=lambda name: name != active)

    pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="backend-probe")
    probes = {name: pool.submit(_probe_backend, name) for name in names}
    # Not waiting: a hung probe's thread is abandoned, not joined.
    pool.shutdown(wait=False)
    deadline = time.monotonic() + timeout_s
    rows = []
    for name in names:
        try:
            health, health_error, isolation, describe_error = probes[name].result(
                timeout=max(0.0, deadline - time.monotonic())
            )
        except FuturesTimeout:
            health, isolation = None, None
            health_error = describe_error = f"No answer within {timeout_s:g} s."
        rows.append(
            BackendOverview(
                name=name,
                active=name == active,
                selection_reason=selection.reason if selection and name == active else "",
                health=health,
                health_error=health_error or (active_error if name == active else ""),
                isolation=isolation,
                describe_error=describe_error,
            )
        )
    return rows


def _probe_backend(name: str) -> tuple[Health | None, str, Isolation | None, str]:
    try:
        backend = get_backend(name)
    except Exception as exc:
        error = _describe_error(exc)
        return None, error, None, error
    health: Health | None = None
    isolation: Isolation | None = None
    health_error = describe_error = ""
    try:
        health = backend.health()
    except Exception as exc:
        health_error = _describe_error(exc)
    try:
        isolation = backend.describe()
    except Exception as exc:
        describe_error = _describe_error(exc)
    return health, health_error, isolation, describe_error


def _describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def execution_wait(execution_id: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for an execution to end; True if it has.

    Polls one indexed column by primary key, starting at 50 ms and backing off to 500 ms,
    so a waiting request costs a few cheap queries a second at most.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        current = Execution.objects.filter(pk=execution_id).values_list("status", flat=True)
        status = current.first()
        if status is None or status not in ACTIVE_STATUSES:
            return status is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.5)
