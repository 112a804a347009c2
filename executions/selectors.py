"""Reads shared by the pages, the API and admin."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery

from executions import judging
from executions.backends import BACKENDS, Selection, active_selection, get_backend
from executions.conf import execution_settings
from executions.display import Excerpt, excerpt, split_at_line
from executions.models import (
    ACTIVE_STATUSES,
    Evaluation,
    Execution,
    Runtime,
    SelfTestStatus,
    Status,
    TestResult,
    Verdict,
)
from sandbox.contract import Health, Isolation


def runtimes_listed() -> QuerySet[Runtime]:
    """The enabled runtimes, offered or not (``Runtime.offered``), as the API lists them."""
    return Runtime.objects.filter(enabled=True)


def runtimes_enabled() -> QuerySet[Runtime]:
    """The runtimes evaluators may pick: enabled, and not failing their self-test."""
    return Runtime.objects.filter(enabled=True).exclude(self_test_status=SelfTestStatus.FAILED)


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


# The evaluation page ------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What an attempt used over all its runs. With test cases (``per_case``) the execution
    row holds only its deciding case's figures, so these come from every case's result."""

    max_wall_time_ms: int | None
    total_wall_time_ms: int | None
    max_peak_memory_kb: int | None
    per_case: bool


def execution_figures(execution: Execution) -> Figures:
    """Maximum and total over the execution's test results (prefetch ``results`` to read
    them without a query), or the single run's own figures when it had no test cases."""
    results = list(execution.results.all())
    if not results:
        return Figures(
            max_wall_time_ms=execution.wall_time_ms,
            total_wall_time_ms=execution.wall_time_ms,
            max_peak_memory_kb=execution.peak_memory_kb,
            per_case=False,
        )
    walls = [result.wall_time_ms for result in results if result.wall_time_ms is not None]
    memories = [result.peak_memory_kb for result in results if result.peak_memory_kb is not None]
    return Figures(
        max_wall_time_ms=max(walls, default=None),
        total_wall_time_ms=sum(walls) if walls else None,
        max_peak_memory_kb=max(memories, default=None),
        per_case=True,
    )


@dataclass(frozen=True)
class DifferenceSide:
    """One output at its first difference: where, an excerpt around it, and the whole
    output split around that line (``full_line`` is empty past the output's end)."""

    position: judging.Position
    excerpt: Excerpt
    full_before: str
    full_line: str
    full_after: str


@dataclass(frozen=True)
class DifferenceView:
    expected: DifferenceSide
    actual: DifferenceSide
    whitespace_only: bool
    note: str
    same_place: bool


@dataclass(frozen=True)
class ResultView:
    """A test result as the viewer may see it. ``show_io`` is False for a hidden case the
    viewer may not see; then ``difference`` and ``start_failure`` are None too, since both are
    read from its output (and the difference from its expected output). ``difference`` is
    also None for an accepted case, and until the attempt ends."""

    result: TestResult
    show_io: bool
    difference: DifferenceView | None
    start_failure: judging.StartFailure | None


@dataclass(frozen=True)
class AttemptView:
    """The latest attempt on the evaluation page."""

    execution: Execution
    figures: Figures
    results: list[ResultView]
    start_failure: judging.StartFailure | None
    can_rerun: bool


@dataclass(frozen=True)
class HistoryRow:
    execution: Execution
    figures: Figures


def rerun_allowed(status: str | None) -> bool:
    """Whether an evaluation whose latest attempt has ``status`` (None: never run) may be run
    again. A new attempt while one is queued or running would only race it."""
    return status not in ACTIVE_STATUSES


def latest_status(evaluation: Evaluation) -> tuple[int, str] | None:
    """The latest attempt's number and status, or None when the evaluation never ran."""
    return (
        Execution.objects.filter(evaluation=evaluation)
        .order_by("-attempt")
        .values_list("attempt", "status")
        .first()
    )


def attempt_view(execution: Execution, viewer: AbstractBaseUser | AnonymousUser) -> AttemptView:
    """Everything the page shows of ``execution``, from rows ``evaluation_detail`` prefetched.

    Only cases the viewer may see are compared or labelled: the difference shows the expected
    output, and both are read from output a hidden case's input may have shaped.
    """
    language = execution.evaluation.runtime.language
    see_hidden = can_see_hidden_cases(viewer)
    rows = []
    for result in execution.results.all():
        case = result.test_case
        show = see_hidden or not case.hidden
        difference = None
        failure = None
        # Not while the attempt runs: the live section is fetched every second, and a
        # difference in outputs of a megabyte is worth working out once, at the end.
        if show and result.verdict == Verdict.WRONG_ANSWER and not execution.is_active:
            found = judging.first_difference(
                bytes(result.stdout), case.expected_output, case.comparison, case.tolerance
            )
            difference = _difference_view(found, result.stdout_text, case.expected_output)
        if show and result.verdict == Verdict.RUNTIME_ERROR:
            failure = judging.start_failure(language, result.exit_code, bytes(result.stderr))
        rows.append(ResultView(result, show, difference, failure))
    if rows:
        failure = next((row.start_failure for row in rows if row.start_failure), None)
    else:
        failure = judging.start_failure(language, execution.exit_code, bytes(execution.stderr))
    return AttemptView(
        execution=execution,
        figures=execution_figures(execution),
        results=rows,
        start_failure=failure if execution.verdict == Verdict.RUNTIME_ERROR else None,
        can_rerun=rerun_allowed(execution.status),
    )


def _difference_view(
    found: judging.Difference | None, actual_text: str, expected_text: str
) -> DifferenceView | None:
    if found is None:
        return None

    def side(position: judging.Position, text: str) -> DifferenceSide:
        before, line, after = (
            split_at_line(text, position.line) if position.present else (text, "", "")
        )
        return DifferenceSide(
            position=position,
            excerpt=excerpt(position.text, position.column),
            full_before=before,
            full_line=line,
            full_after=after,
        )

    return DifferenceView(
        expected=side(found.expected, expected_text),
        actual=side(found.actual, actual_text),
        whitespace_only=found.whitespace_only,
        note=found.note,
        same_place=(found.expected.line, found.expected.column)
        == (found.actual.line, found.actual.column),
    )


def history(executions: list[Execution]) -> list[HistoryRow]:
    return [HistoryRow(execution, execution_figures(execution)) for execution in executions]


# Edit and resubmit ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResubmitInitial:
    """The submit page's initial values copied from an evaluation. ``omitted_hidden`` counts
    hidden cases left out; ``omitted_files`` names files the one-source form cannot carry."""

    source: Evaluation
    form: dict[str, object]
    cases: list[dict[str, object]]
    omitted_hidden: int
    omitted_files: list[str]


def can_resubmit(user: AbstractBaseUser | AnonymousUser, evaluation: Evaluation) -> bool:
    return evaluation.owner_id == user.pk or bool(getattr(user, "is_staff", False))


def resubmit_initial(user: AbstractBaseUser | AnonymousUser, pk: int) -> ResubmitInitial:
    """What the submit page starts from to edit and resubmit evaluation ``pk``.

    Only its owner and staff may; a hidden case's input and expected output are copied for
    its owner alone (who wrote them), and left out for anyone else. Raises
    ``Evaluation.DoesNotExist`` when the evaluation does not exist or the user may not.
    """
    evaluation = evaluations_visible_to(user).prefetch_related("test_cases").get(pk=pk)
    if not can_resubmit(user, evaluation):
        raise Evaluation.DoesNotExist
    owner = evaluation.owner_id == user.pk
    files = list(evaluation.files)
    form = {
        "title": evaluation.title,
        "runtime": evaluation.runtime.name,
        "source": files[0]["content"] if files else "",
        "stdin": evaluation.stdin,
        "time_limit_ms": evaluation.time_limit_ms,
        "memory_mb": evaluation.memory_mb,
        "output_kb": evaluation.output_kb,
    }
    cases = [
        {
            "name": case.name,
            "stdin": case.stdin,
            "expected_output": case.expected_output,
            "comparison": case.comparison,
            "tolerance": case.tolerance,
            "weight": case.weight,
            "hidden": case.hidden,
        }
        for case in evaluation.test_cases.all()
        if owner or not case.hidden
    ]
    return ResubmitInitial(
        source=evaluation,
        form=form,
        cases=cases,
        omitted_hidden=len(evaluation.test_cases.all()) - len(cases),
        omitted_files=[item["name"] for item in files[1:]],
    )


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


def backend_selection() -> Selection:
    """Which backend runs code here and why; raises ``ImproperlyConfigured`` like the registry."""
    return active_selection()


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

    probes = _in_parallel(names, _probe_backend, timeout_s)
    rows = []
    for name in names:
        probe = probes[name]
        if probe is None:
            health, isolation = None, None
            health_error = describe_error = _no_answer(timeout_s)
        else:
            health, health_error, isolation, describe_error = probe
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


_Probe = TypeVar("_Probe")


def _in_parallel(
    names: Sequence[str], probe: Callable[[str], _Probe], timeout_s: float
) -> dict[str, _Probe | None]:
    """``probe(name)`` for every name, in parallel threads; None for a probe that has not
    answered within ``timeout_s`` in all. ``probe`` must not raise. A probe that overruns is
    left to finish in its thread, which is abandoned, not joined."""
    if not names:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="backend-probe")
    futures = {name: pool.submit(probe, name) for name in names}
    pool.shutdown(wait=False)
    deadline = time.monotonic() + timeout_s
    answers: dict[str, _Probe | None] = {}
    for name in names:
        try:
            answers[name] = futures[name].result(timeout=max(0.0, deadline - time.monotonic()))
        except FuturesTimeout:
            answers[name] = None
    return answers


def _no_answer(timeout_s: float) -> str:
    return f"No answer within {timeout_s:g} s."


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


# Where a re-run may go, for the admin's "re-run on another backend" ------------------------

# The re-run form waits at most this long, in all, for the backends' health.
RERUN_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class RerunTarget:
    """A backend an operator may re-run on, with its health probed just now. ``health_error``
    holds why there is no ``health`` (the backend could not be built, ``health()`` raised or
    did not answer in time)."""

    name: str
    active: bool
    health: Health | None
    health_error: str

    @property
    def healthy(self) -> bool:
        return self.health is not None and self.health.ok

    @property
    def health_detail(self) -> str:
        """One line on whether it can take runs now, and why."""
        if self.health is None:
            return self.health_error
        return self.health.detail


def backend_configured(name: str) -> bool:
    """Whether this deployment has set up the backend called ``name``, judged from settings,
    the environment and local files only (nothing is asked over the network, and an
    unconfigured backend's SDK is never imported).

    ``remote``: its service URLs are set. ``kubernetes``: a cluster configuration exists
    (``KUBERNETES_SERVICE_HOST`` in a pod, ``KUBECONFIG``, ``~/.kube/config``, or a ``host``,
    ``kubeconfig`` or ``api_client`` option). ``docker``: a ``base_url`` option, or
    ``DOCKER_HOST`` naming a remote engine or socket proxy, or a local socket
    (``DOCKER_HOST``'s or the default one) that accepts connections. ``disabled`` runs nothing
    and ``fake`` only stands in for tests: neither, nor any other name, is ever "configured".
    """
    from executions.environment import docker_socket_path, socket_reachable

    options = execution_settings.BACKEND_OPTIONS.get(name, {})
    if name == "remote":
        return bool(options.get("urls"))
    if name == "kubernetes":
        if options.get("host") or options.get("api_client") or options.get("kubeconfig"):
            return True
        if os.environ.get("KUBERNETES_SERVICE_HOST") or os.environ.get("KUBECONFIG"):
            return True
        return (Path.home() / ".kube" / "config").is_file()
    if name == "docker":
        if options.get("base_url"):
            return True
        socket_path = docker_socket_path()
        # A tcp:// or ssh:// DOCKER_HOST is configuration enough: health() says if it answers.
        return not socket_path or socket_reachable(socket_path)
    return False


def runnable_backends() -> tuple[str, list[str]]:
    """The active backend's name ("" when none could be chosen), and the backends this
    deployment can run on: the active one (unless it is ``disabled``) first, then every other
    backend configured here (see ``backend_configured``). Nothing is probed."""
    try:
        active = active_selection().name
    except Exception:
        active = ""  # then only the configured backends count
    names = [name for name in BACKENDS if name != active and backend_configured(name)]
    if active and active != "disabled":
        names.insert(0, active)
    return active, names


def rerun_targets(timeout_s: float = RERUN_PROBE_TIMEOUT_S) -> list[RerunTarget]:
    """The backends a re-run may be sent to (``runnable_backends``), each with its
    ``health()``.

    Never raises: a backend that cannot be built, whose ``health()`` raises, or that has not
    answered within ``timeout_s`` in all (probes run in parallel) is returned unhealthy, with
    the reason in ``health_error``.
    """
    active, names = runnable_backends()
    probes = _in_parallel(names, _probe_health, timeout_s)
    targets = []
    for name in names:
        probe = probes[name]
        health, error = probe if probe is not None else (None, _no_answer(timeout_s))
        targets.append(RerunTarget(name, name == active, health, error))
    return targets


def _probe_health(name: str) -> tuple[Health | None, str]:
    try:
        return get_backend(name).health(), ""
    except Exception as exc:
        return None, _describe_error(exc)


# How often a waiting request asks whether its execution ended, at first, and for how long.
WAIT_POLL_S = 0.01
WAIT_FAST_S = 1.0


def execution_wait(execution_id: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for an execution to end; True if it has.

    Polls one indexed column by primary key: every ``WAIT_POLL_S`` for the first
    ``WAIT_FAST_S`` (most runs end within it, and each poll's delay is added to what the
    client waits), then backing off to 500 ms, so a long wait costs a few cheap queries a
    second at most. The poll is one fixed statement, not a queryset: compiling a queryset
    costs ~15x the query itself, and many clients may be waiting at once.
    """
    table = connection.ops.quote_name(Execution._meta.db_table)
    status_column = connection.ops.quote_name(Execution._meta.get_field("status").column)
    key_column = connection.ops.quote_name(Execution._meta.pk.column)
    # Names from the model, quoted; the one value is a parameter.
    poll = f"SELECT {status_column} FROM {table} WHERE {key_column} = %s"  # noqa: S608
    started = time.monotonic()
    deadline = started + timeout_s
    delay = WAIT_POLL_S
    while True:
        with connection.cursor() as cursor:
            cursor.execute(poll, [execution_id])
            row = cursor.fetchone()
        if row is None or row[0] not in ACTIVE_STATUSES:
            return row is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        if time.monotonic() - started > WAIT_FAST_S:
            delay = min(delay * 2, 0.5)
