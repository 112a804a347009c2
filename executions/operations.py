"""What operators watch: the queue, throughput, latency, failures, and each part's health.

Every figure is read from the database when it is asked for, with a few aggregate queries,
never from counters kept in a process: web workers and cluster workers are separate
processes, and the database is the one record they all write. So any web process gives the
same answer. The admin's operations dashboard and the Prometheus collector
(``executions.metrics``) both read from here.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import connection, connections
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    Q,
    QuerySet,
    Sum,
    Window,
)
from django.db.models.expressions import Combinable
from django.db.models.functions import RowNumber, Trunc
from django.utils import timezone

from executions import selectors
from executions.backends import get_backend
from executions.conf import execution_settings
from executions.models import (
    AuditEvent,
    ClusterBeat,
    Execution,
    Runtime,
    SelfTestStatus,
    Status,
    Verdict,
    WebhookDelivery,
)
from sandbox.contract import ErrorKind, Health

# Upper bounds, in seconds, of the duration histograms' buckets (the metrics' ``le``).
QUEUE_WAIT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
RUN_TIME_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# What the platform does to a run by itself, as recorded in the audit trail: the reaper
# closing an abandoned run, dispatch sending again a task the broker lost, a run going back to
# the queue because its backend could not start it, and an automatic re-run.
AUTOMATIC_ACTIONS = (
    AuditEvent.Action.REAP,
    AuditEvent.Action.REQUEUE,
    AuditEvent.Action.RELEASE,
    AuditEvent.Action.RETRY,
)

# How long a health probe (a backend, the broker) may take before it counts as not answering.
# A scrape or a page waits at most this long for all of them together.
PROBE_TIMEOUT_S = 2.0


ERROR_KIND_LABELS: dict[str, str] = {
    ErrorKind.WORKER_LOST: "Worker lost",
    ErrorKind.UNAVAILABLE: "Backend unavailable",
    ErrorKind.BACKEND_ERROR: "Backend error",
    ErrorKind.REFUSED: "Refused (execution disabled)",
    ErrorKind.CANCELLED: "Cancelled",
}


def error_kind_label(kind: str) -> str:
    return ERROR_KIND_LABELS.get(kind, kind.replace("_", " ").capitalize())


def _queue_wait() -> ExpressionWrapper:
    return ExpressionWrapper(F("started_at") - F("queued_at"), output_field=DurationField())


def _run_time() -> ExpressionWrapper:
    return ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())


# Totals, for the metrics ---------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutionCount:
    """How many executions share these values (``runtime`` is the runtime's name)."""

    status: str
    verdict: str
    error_kind: str
    backend: str
    runtime: str
    count: int


@dataclass(frozen=True)
class ExecutionTotals:
    counts: list[ExecutionCount]
    oldest_queued_at: datetime | None

    @property
    def queued(self) -> int:
        return sum(row.count for row in self.counts if row.status == Status.QUEUED)


def execution_totals() -> ExecutionTotals:
    """Every execution counted by status, verdict, error kind, backend and runtime, and when
    the oldest queued one was queued. One query."""
    rows = (
        Execution.objects.order_by()
        .values(
            "status", "verdict", "error_kind", "backend", runtime=F("evaluation__runtime__name")
        )
        .annotate(count=Count("pk"), oldest=Min("queued_at"))
    )
    counts = []
    oldest: datetime | None = None
    for row in rows:
        counts.append(
            ExecutionCount(
                status=row["status"],
                verdict=row["verdict"],
                error_kind=row["error_kind"],
                backend=row["backend"],
                runtime=row["runtime"],
                count=row["count"],
            )
        )
        if row["status"] == Status.QUEUED and (oldest is None or row["oldest"] < oldest):
            oldest = row["oldest"]
    return ExecutionTotals(counts=counts, oldest_queued_at=oldest)


@dataclass(frozen=True)
class Histogram:
    """Durations in seconds: ``cumulative[i]`` of them are at most ``bounds[i]``; ``count``
    and ``sum_s`` are over all of them."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    sum_s: float


@dataclass(frozen=True)
class DurationHistograms:
    queue_wait: Histogram
    run_time: Histogram


def duration_histograms() -> dict[str, DurationHistograms]:
    """Per backend, over every execution that started and ended: its time in the queue
    (queued → started) and in the sandbox (started → finished). The database counts the
    buckets, in one query."""
    aggregates: dict[str, Any] = {
        "count": Count("pk"),
        "wait_sum": Sum("wait"),
        "run_sum": Sum("run"),
    }
    for index, bound in enumerate(QUEUE_WAIT_BUCKETS_S):
        aggregates[f"wait_{index}"] = Count("pk", filter=Q(wait__lte=timedelta(seconds=bound)))
    for index, bound in enumerate(RUN_TIME_BUCKETS_S):
        aggregates[f"run_{index}"] = Count("pk", filter=Q(run__lte=timedelta(seconds=bound)))
    rows = (
        Execution.objects.filter(started_at__isnull=False, finished_at__isnull=False)
        .order_by()
        .alias(wait=_queue_wait(), run=_run_time())
        .values("backend")
        .annotate(**aggregates)
    )

    def histogram(row: Mapping[str, Any], prefix: str, bounds: tuple[float, ...]) -> Histogram:
        total: timedelta | None = row[f"{prefix}_sum"]
        return Histogram(
            bounds=bounds,
            cumulative=tuple(row[f"{prefix}_{index}"] for index in range(len(bounds))),
            count=row["count"],
            sum_s=total.total_seconds() if total is not None else 0.0,
        )

    return {
        row["backend"]: DurationHistograms(
            queue_wait=histogram(row, "wait", QUEUE_WAIT_BUCKETS_S),
            run_time=histogram(row, "run", RUN_TIME_BUCKETS_S),
        )
        for row in rows
    }


def runtime_self_tests() -> dict[str, int]:
    """How many enabled runtimes last passed, failed, or never ran their self-test."""
    counts = dict.fromkeys(SelfTestStatus.values, 0)
    rows = (
        Runtime.objects.filter(enabled=True)
        .values("self_test_status")
        .annotate(count=Count("pk"))
        .values_list("self_test_status", "count")
    )
    counts.update(dict(rows))
    return counts


def automatic_actions() -> dict[str, int]:
    """How often the platform acted on a run by itself, by action (``AUTOMATIC_ACTIONS``:
    the reaper's closes and re-queues), counted from the audit trail. One query."""
    rows = (
        AuditEvent.objects.filter(action__in=AUTOMATIC_ACTIONS, actor__isnull=True)
        .order_by()
        .values("action")
        .annotate(count=Count("pk"))
    )
    counts = dict.fromkeys(AUTOMATIC_ACTIONS, 0)
    counts.update({row["action"]: row["count"] for row in rows})
    return {str(action): count for action, count in counts.items()}


@dataclass(frozen=True)
class WebhookOutcomes:
    """Webhook delivery attempts that ended: answered 2xx (``succeeded``), failed with another
    attempt scheduled (``retried``), or failed with none after it (``gave_up``: the attempts
    ran out, or the address was refused). An attempt still under way is in none."""

    succeeded: int
    retried: int
    gave_up: int


def webhook_outcomes() -> WebhookOutcomes:
    """How the recorded webhook delivery attempts ended. One query."""
    ended = Q(duration_ms__isnull=False, succeeded=False)
    totals = WebhookDelivery.objects.aggregate(
        answered=Count("pk", filter=Q(succeeded=True)),
        retried=Count("pk", filter=ended & Q(next_retry_at__isnull=False)),
        gave_up=Count("pk", filter=ended & Q(next_retry_at__isnull=True)),
    )
    return WebhookOutcomes(
        succeeded=totals["answered"], retried=totals["retried"], gave_up=totals["gave_up"]
    )


def schedule_overdue(now: datetime | None = None) -> timedelta | None:
    """How late the most overdue task schedule is (a webhook's next attempt, say): zero
    while a cluster runs them, growing while none does. None when nothing is scheduled.
    One query."""
    from django_q.models import Schedule

    now = now or timezone.now()
    due: datetime | None = Schedule.objects.exclude(repeats=0).aggregate(due=Min("next_run"))["due"]
    if due is None:
        return None
    return max(timedelta(0), now - due)


# The dashboard -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A span the dashboard shows, cut into ``buckets`` buckets of one ``unit`` each (the
    last one is the current, partial unit)."""

    key: str
    label: str
    unit: str  # "minute" or "hour": what the database truncates times to
    buckets: int

    @property
    def bucket(self) -> timedelta:
        return timedelta(minutes=1) if self.unit == "minute" else timedelta(hours=1)

    def floor(self, moment: datetime) -> datetime:
        """The start of the bucket that holds ``moment``, in the current time zone."""
        local = timezone.localtime(moment).replace(second=0, microsecond=0)
        return local if self.unit == "minute" else local.replace(minute=0)


SPANS = {
    "hour": Span("hour", "Last hour", "minute", 60),
    "day": Span("day", "Last day", "hour", 24),
}

# Ended runs by class, for throughput: what the program earned, or why it has no verdict.
THROUGHPUT_CLASSES = {
    "accepted": "Accepted",
    "rejected": "Other verdicts",
    "infrastructure": "Infrastructure failures",
    "cancelled": "Cancelled",
}
# Nearest-rank percentiles shown for latency, in percent.
PERCENTILES = (50, 95)


def throughput_class(status: str, verdict: str) -> str:
    if status == Status.CANCELLED:
        return "cancelled"
    if status in (Status.ERROR, Status.REFUSED) or verdict == Verdict.INTERNAL_ERROR:
        return "infrastructure"
    return "accepted" if verdict == Verdict.ACCEPTED else "rejected"


@dataclass(frozen=True)
class Series:
    """One line or stack of a chart: a value per bucket (None where there is none)."""

    key: str
    label: str
    values: tuple[float | None, ...]

    @property
    def total(self) -> float:
        return sum(value for value in self.values if value is not None)


@dataclass(frozen=True)
class Percentiles:
    """Nearest-rank percentiles of durations in seconds, by percent; None with no runs."""

    values: Mapping[int, float | None]

    @property
    def p50(self) -> float | None:
        return self.values.get(50)

    @property
    def p95(self) -> float | None:
        return self.values.get(95)


@dataclass(frozen=True)
class OutcomeCount:
    """Ended runs with one verdict (or, without a verdict, one status)."""

    key: str
    label: str
    group: str  # its key in THROUGHPUT_CLASSES
    count: int


@dataclass(frozen=True)
class Dashboard:
    """The span's charts, each a value per bucket (``starts``), and the totals beside them.

    ``throughput``: ended runs by ``THROUGHPUT_CLASSES``. ``failures``: runs that ended in an
    infrastructure failure, by error kind (cancelled runs are not failures). ``queue``: runs
    queued and running at each bucket's end. ``queue_wait`` and ``run_time``: p50 and p95 in
    seconds of the runs that ended in each bucket (queued → started, started → finished).
    """

    span: Span
    now: datetime
    starts: tuple[datetime, ...]
    throughput: tuple[Series, ...]
    failures: tuple[Series, ...]
    queue: tuple[Series, ...]
    queue_wait: tuple[Series, ...]
    run_time: tuple[Series, ...]
    outcomes: tuple[OutcomeCount, ...]
    ended: int
    queue_wait_overall: Percentiles
    run_time_overall: Percentiles
    queued_now: int
    running_now: int
    oldest_queued_age: timedelta | None

    @property
    def failed(self) -> int:
        return int(sum(series.total for series in self.failures))


def dashboard(span: Span, *, now: datetime | None = None) -> Dashboard:
    """What happened in ``span`` up to ``now``. Four queries, whatever the number of runs:
    the ended runs by bucket and outcome, the two latency percentiles (ranked by the
    database's window functions, on SQLite and PostgreSQL alike) and the queue samples."""
    now = now or timezone.now()
    first = span.floor(now) - span.bucket * (span.buckets - 1)
    starts = tuple(first + span.bucket * index for index in range(span.buckets))
    index_of = {start: index for index, start in enumerate(starts)}
    ended = Execution.objects.filter(finished_at__gte=first, finished_at__lte=now).order_by()
    bucket = Trunc("finished_at", span.unit)

    by_class: dict[str, list[float | None]] = {key: [0] * len(starts) for key in THROUGHPUT_CLASSES}
    by_kind: dict[str, list[float | None]] = defaultdict(lambda: [0] * len(starts))
    outcomes: dict[str, int] = defaultdict(int)
    groups: dict[str, str] = {}
    rows = (
        ended.annotate(bucket=bucket)
        .values("bucket", "status", "verdict", "error_kind")
        .annotate(count=Count("pk"))
    )
    for row in rows:
        index = index_of.get(row["bucket"])
        if index is None:
            continue
        count = row["count"]
        group = throughput_class(row["status"], row["verdict"])
        _add(by_class[group], index, count)
        if row["error_kind"] and row["error_kind"] != ErrorKind.CANCELLED:
            _add(by_kind[row["error_kind"]], index, count)
        outcome = row["verdict"] or row["status"]
        outcomes[outcome] += count
        groups[outcome] = group

    wait_by_bucket, wait_overall = _percentiles(ended, _queue_wait(), bucket, index_of)
    run_by_bucket, run_overall = _percentiles(ended, _run_time(), bucket, index_of)
    sample_at = [min(start + span.bucket, now) for start in starts]
    queued, running, now_counts = _queue_samples(first, sample_at, now)

    return Dashboard(
        span=span,
        now=now,
        starts=starts,
        throughput=tuple(
            Series(key, label, tuple(by_class[key])) for key, label in THROUGHPUT_CLASSES.items()
        ),
        failures=tuple(
            Series(kind, error_kind_label(kind), tuple(values))
            for kind, values in sorted(by_kind.items(), key=lambda item: -_total(item[1]))
        ),
        queue=(
            Series("queued", "Queued", tuple(queued)),
            Series("running", "Running", tuple(running)),
        ),
        queue_wait=_percentile_series(wait_by_bucket, len(starts)),
        run_time=_percentile_series(run_by_bucket, len(starts)),
        outcomes=tuple(
            OutcomeCount(key, _outcome_label(key), groups[key], count)
            for key, count in sorted(outcomes.items(), key=lambda item: (-item[1], item[0]))
        ),
        ended=sum(outcomes.values()),
        queue_wait_overall=wait_overall,
        run_time_overall=run_overall,
        queued_now=now_counts["queued_now"],
        running_now=now_counts["running_now"],
        oldest_queued_age=(now - now_counts["oldest"]) if now_counts["oldest"] else None,
    )


def _add(values: list[float | None], index: int, count: int) -> None:
    values[index] = (values[index] or 0) + count


def _total(values: Iterable[float | None]) -> float:
    return sum(value or 0 for value in values)


def _outcome_label(key: str) -> str:
    if key in Verdict.values:
        return str(Verdict(key).label)
    if key in Status.values:
        return str(Status(key).label)
    return key


def _rank(count: Combinable, percent: int) -> Combinable:
    """The nearest rank of the ``percent``-th percentile among ``count`` values,
    ceil(percent * count / 100), in integer arithmetic so that every database agrees."""
    return (count * percent + 99) / 100


def _nearest_rank(count: int, percent: int) -> int:
    return (count * percent + 99) // 100


def _percentiles(
    ended: QuerySet[Execution],
    duration: ExpressionWrapper,
    bucket: Trunc,
    index_of: Mapping[datetime, int],
) -> tuple[dict[int, Percentiles], Percentiles]:
    """``PERCENTILES`` of ``duration`` over the runs in ``ended`` that started: per bucket
    (by index) and over all of them. One query: the database ranks the runs in each bucket and
    in all, and returns only the rows at the wanted ranks."""
    ranked = (
        ended.filter(started_at__isnull=False)
        .annotate(bucket=bucket, duration=duration)
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("bucket")], order_by=F("duration").asc()),
            size=Window(Count("pk"), partition_by=[F("bucket")]),
            overall_rank=Window(RowNumber(), order_by=F("duration").asc()),
            overall_size=Window(Count("pk")),
        )
    )
    wanted = Q()
    for percent in PERCENTILES:
        wanted |= Q(rank=_rank(F("size"), percent))
        wanted |= Q(overall_rank=_rank(F("overall_size"), percent))
    per_bucket: dict[int, dict[int, float | None]] = defaultdict(dict)
    overall: dict[int, float | None] = dict.fromkeys(PERCENTILES)
    rows = ranked.filter(wanted).values_list(
        "bucket", "rank", "size", "overall_rank", "overall_size", "duration"
    )
    for start, rank, size, overall_rank, overall_size, value in rows:
        seconds = value.total_seconds()
        index = index_of.get(start)
        for percent in PERCENTILES:
            if index is not None and rank == _nearest_rank(size, percent):
                per_bucket[index][percent] = seconds
            if overall_rank == _nearest_rank(overall_size, percent):
                overall[percent] = seconds
    return (
        {index: Percentiles(values) for index, values in per_bucket.items()},
        Percentiles(overall),
    )


def _percentile_series(by_bucket: Mapping[int, Percentiles], size: int) -> tuple[Series, ...]:
    return tuple(
        Series(
            f"p{percent}",
            f"p{percent}",
            tuple(
                by_bucket[index].values.get(percent) if index in by_bucket else None
                for index in range(size)
            ),
        )
        for percent in PERCENTILES
    )


def _queue_samples(
    first: datetime, moments: list[datetime], now: datetime
) -> tuple[list[float | None], list[float | None], dict[str, Any]]:
    """How many runs were queued and how many running at each of ``moments``, told from
    their timestamps; and how many are queued and running now, and the oldest queued time.
    One query over the runs that had not ended by ``first``."""
    aggregates: dict[str, Any] = {
        "queued_now": Count("pk", filter=Q(status=Status.QUEUED)),
        "running_now": Count("pk", filter=Q(status=Status.RUNNING)),
        "oldest": Min("queued_at", filter=Q(status=Status.QUEUED)),
    }
    for index, moment in enumerate(moments):
        not_ended = Q(finished_at__isnull=True) | Q(finished_at__gt=moment)
        not_started = Q(started_at__isnull=True) | Q(started_at__gt=moment)
        aggregates[f"queued_{index}"] = Count(
            "pk", filter=Q(queued_at__lte=moment) & not_started & not_ended
        )
        aggregates[f"running_{index}"] = Count("pk", filter=Q(started_at__lte=moment) & not_ended)
    found = (
        Execution.objects.filter(queued_at__lte=now)
        .filter(Q(finished_at__isnull=True) | Q(finished_at__gt=first))
        .aggregate(**aggregates)
    )
    queued: list[float | None] = [found[f"queued_{index}"] for index in range(len(moments))]
    running: list[float | None] = [found[f"running_{index}"] for index in range(len(moments))]
    return queued, running, found


# Health of each part -------------------------------------------------------------------------

_Answer = TypeVar("_Answer")
_probes: dict[str, Future[Any]] = {}
_probes_lock = threading.Lock()


def _probe(key: str, probe: Callable[[], _Answer]) -> Future[_Answer]:
    """The probe called ``key`` that is still under way, or a new one in a thread of its own.

    A part that hangs thus holds at most one thread per process however often it is asked
    (each scrape, each page view), and a probe that answers late still serves the next ask.
    """
    with _probes_lock:
        running = _probes.get(key)
        if running is not None and not running.done():
            return running
        future: Future[_Answer] = Future()
        _probes[key] = future
    thread = threading.Thread(
        target=_fulfil, args=(future, probe), name=f"probe-{key}", daemon=True
    )
    thread.start()
    return future


def _fulfil(future: Future[_Answer], probe: Callable[[], _Answer]) -> None:
    try:
        future.set_result(probe())
    except BaseException as exc:
        future.set_exception(exc)
    finally:
        connections.close_all()  # this thread's own, if the probe used the database


def _answers(
    futures: Mapping[str, Future[_Answer]], timeout_s: float
) -> dict[str, tuple[_Answer | None, str]]:
    """Each future's answer, or None and why there is none (it raised, or did not answer
    within ``timeout_s`` counted from now, for all of them together)."""
    deadline = time.monotonic() + timeout_s
    answers: dict[str, tuple[_Answer | None, str]] = {}
    for key, future in futures.items():
        try:
            answers[key] = (future.result(timeout=max(0.0, deadline - time.monotonic())), "")
        except FuturesTimeout:
            answers[key] = (None, f"No answer within {timeout_s:g} s.")
        except Exception as exc:
            answers[key] = (None, f"{type(exc).__name__}: {exc}")
    return answers


@dataclass(frozen=True)
class BackendHealth:
    """A backend this deployment runs on, with its ``health()`` or why there is none."""

    name: str
    active: bool
    health: Health | None
    error: str

    @property
    def ok(self) -> bool:
        return self.health is not None and self.health.ok

    @property
    def detail(self) -> str:
        return self.health.detail if self.health is not None else self.error


def backends_health(timeout_s: float = PROBE_TIMEOUT_S) -> list[BackendHealth]:
    """Each backend this deployment runs on (``selectors.runnable_backends``, and the active
    one even when it is ``disabled``), probed in parallel. Never raises, and returns within
    about ``timeout_s``: a backend that cannot be built, raises, or is slower is unhealthy."""
    probes = _BackendProbes()
    return probes.rows(_answers(probes.futures, timeout_s))


class _BackendProbes:
    """The backends' health probes, started on creation; ``rows`` reads their answers."""

    def __init__(self) -> None:
        self.active, self.names = selectors.runnable_backends()
        if self.active == "disabled":
            self.names.insert(0, self.active)
        self.futures: dict[str, Future[Any]] = {}
        self.errors: dict[str, str] = {}
        for name in self.names:
            try:
                backend = get_backend(name)
            except Exception as exc:
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            # A backend rebuilt with other options is another probe.
            self.futures[name] = _probe(f"backend-{name}-{id(backend)}", backend.health)

    def rows(self, answers: Mapping[str, tuple[Any, str]]) -> list[BackendHealth]:
        return [
            BackendHealth(
                name, name == self.active, *answers.get(name, (None, self.errors.get(name, "")))
            )
            for name in self.names
        ]


@dataclass(frozen=True)
class PartHealth:
    """One part of the platform now. ``ok`` is None when it cannot be told from here."""

    key: str
    name: str
    ok: bool | None
    detail: str


# The broker's probe among the backends' (no backend name has a space).
BROKER_PROBE = "task broker"


@dataclass(frozen=True)
class _BrokerAnswer:
    info: str
    waiting: int
    clusters: list[Any]


def _ask_broker() -> _BrokerAnswer:
    from django_q.brokers import get_broker
    from django_q.status import Stat

    broker = get_broker()
    broker.ping()
    return _BrokerAnswer(
        info=str(broker.info()),
        waiting=int(broker.queue_size() or 0),
        clusters=Stat.get_all(broker),
    )


def parts_health(
    timeout_s: float = PROBE_TIMEOUT_S, *, now: datetime | None = None
) -> list[PartHealth]:
    """The database, the task broker, the worker cluster and each backend, as they answer now.
    Never raises; the broker and the backends are asked in parallel, for ``timeout_s`` in all.

    The cluster is judged from the beats of each cluster's recovery lane, in the database
    (``ClusterBeat``), with the status django-q2 clusters publish through the broker beside
    them where this process can see it (with the ORM broker it lands in each process's own
    cache).
    """
    from django_q.conf import Conf

    now = now or timezone.now()
    # A broker configured otherwise (tests do that) is another probe.
    broker = _probe(f"broker-{hash((Conf.ORM, str(Conf.REDIS)))}", _ask_broker)
    backends = _BackendProbes()
    parts = [_database_health()]
    beats: list[ClusterBeat] | None = None
    if parts[0].ok:
        beats = live_clusters(now)
    answers = _answers({**backends.futures, BROKER_PROBE: broker}, timeout_s)
    answer, error = answers[BROKER_PROBE]
    if answer is None:
        parts.append(PartHealth("broker", "Task broker", False, error))
    else:
        parts.append(
            PartHealth(
                "broker",
                "Task broker",
                True,
                f"{answer.info}; {answer.waiting} task(s) waiting for a worker.",
            )
        )
    parts.append(_cluster_health(answer.clusters if answer else None, beats, now))
    for row in backends.rows(answers):
        name = f"Backend {row.name}" + (" (active)" if row.active else "")
        parts.append(PartHealth(f"backend-{row.name}", name, row.ok, row.detail))
    return parts


def _database_health() -> PartHealth:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return PartHealth("database", "Database", False, f"{type(exc).__name__}: {exc}")
    elapsed_ms = (time.monotonic() - started) * 1000
    return PartHealth(
        "database", "Database", True, f"{connection.display_name} answered in {elapsed_ms:.0f} ms."
    )


def live_clusters(now: datetime | None = None) -> list[ClusterBeat]:
    """The clusters whose recovery lane beat within ``CLUSTER_SILENCE``. One query."""
    now = now or timezone.now()
    return list(ClusterBeat.objects.filter(beat_at__gte=now - cluster_silence()))


def cluster_silence() -> timedelta:
    """How long a cluster's lane may stay silent before the cluster counts as gone: three
    missed ticks, and some slack for a slow database."""
    return timedelta(seconds=3 * execution_settings.RECOVERY_INTERVAL_S + 10)


def _cluster_health(
    clusters: list[Any] | None, beats: list[ClusterBeat] | None, now: datetime
) -> PartHealth:
    from django_q.conf import Conf

    alive = [stat for stat in clusters or () if stat.status in (Conf.WORKING, Conf.IDLE)]
    published = (
        "; django-q2 reports "
        + ", ".join(f"{stat.host} ({stat.status}, {len(stat.workers)} workers)" for stat in alive)
        if alive
        else ""
    )
    if beats is None:
        return PartHealth(
            "cluster", "Worker cluster", None, "Unknown while the database does not answer."
        )
    if not beats:
        return PartHealth(
            "cluster",
            "Worker cluster",
            False,
            f"No cluster's recovery lane beat in the last {cluster_silence().seconds} s: is "
            f"manage.py qcluster running?{published}",
        )
    described = ", ".join(
        f"{beat.name} (beat {max(0, (now - beat.beat_at).seconds)} s ago, up since "
        f"{beat.started_at:%Y-%m-%d %H:%M} UTC)"
        for beat in beats
    )
    return PartHealth(
        "cluster", "Worker cluster", True, f"{len(beats)} alive: {described}{published}."
    )


def _minutes(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"
