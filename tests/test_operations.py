"""What operators watch, read from known executions: totals, duration histograms, the reaper's
and the webhooks' records, the dashboard's buckets and percentiles, and each part's health,
which answers in bounded time even when a part hangs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Schedule

from executions import operations, services
from executions.models import (
    AuditEvent,
    ClusterBeat,
    Evaluation,
    Execution,
    Runtime,
    Status,
    Verdict,
    WebhookDelivery,
)
from tests.cluster import clusters, wait_for
from tests.records import evaluation_of, finished, record

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 29, 12, 30, 30, tzinfo=UTC)
SECRET = "s" * 48


def at(clock: str) -> datetime:
    """``HH:MM:SS`` on NOW's day."""
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return NOW.replace(hour=hours, minute=minutes, second=seconds)


@pytest.fixture
def evaluation(user: User, runtime: Runtime) -> Evaluation:
    return evaluation_of(user, runtime)


# Totals, for the metrics -------------------------------------------------------------------


def test_totals_count_by_every_label_and_find_the_oldest_queued(
    evaluation: Evaluation, compiling_runtime: Runtime
) -> None:
    finished(evaluation, at("12:00:00"), wait_s=1, run_s=1)
    finished(evaluation, at("12:01:00"), wait_s=1, run_s=1)
    finished(evaluation, at("12:02:00"), wait_s=1, run_s=1, verdict=Verdict.WRONG_ANSWER)
    record(evaluation, status=Status.QUEUED, queued_at=at("12:20:00"))
    record(evaluation, status=Status.QUEUED, queued_at=at("12:10:00"), backend="docker")
    compiled = evaluation_of(evaluation.owner, compiling_runtime)
    finished(
        compiled,
        at("12:05:00"),
        wait_s=1,
        run_s=1,
        status=Status.ERROR,
        verdict=Verdict.INTERNAL_ERROR,
        error_kind="worker_lost",
    )

    totals = operations.execution_totals()

    counts = {
        (row.status, row.verdict, row.error_kind, row.backend, row.runtime): row.count
        for row in totals.counts
    }
    assert counts == {
        ("finished", "accepted", "", "fake", "python-3.11"): 2,
        ("finished", "wrong_answer", "", "fake", "python-3.11"): 1,
        ("queued", "", "", "fake", "python-3.11"): 1,
        ("queued", "", "", "docker", "python-3.11"): 1,
        ("error", "internal_error", "worker_lost", "fake", "c-gcc"): 1,
    }
    assert totals.queued == 2
    assert totals.oldest_queued_at == at("12:10:00")


def test_with_nothing_queued_there_is_no_oldest(evaluation: Evaluation) -> None:
    finished(evaluation, at("12:00:00"), wait_s=1, run_s=1)
    totals = operations.execution_totals()
    assert (totals.queued, totals.oldest_queued_at) == (0, None)


def test_duration_histograms_are_cumulative_per_backend(evaluation: Evaluation) -> None:
    finished(evaluation, at("12:00:00"), wait_s=0.2, run_s=0.3)
    finished(evaluation, at("12:01:00"), wait_s=3, run_s=4)
    finished(evaluation, at("12:02:00"), wait_s=100, run_s=50)
    finished(evaluation, at("12:03:00"), wait_s=7200, run_s=700, backend="docker")
    # Neither started nor ended: no duration of either kind.
    record(evaluation, status=Status.QUEUED, queued_at=at("12:04:00"))
    record(
        evaluation,
        status=Status.CANCELLED,
        queued_at=at("12:04:00"),
        finished_at=at("12:05:00"),
        error_kind="cancelled",
    )

    histograms = operations.duration_histograms()

    assert set(histograms) == {"fake", "docker"}
    fake = histograms["fake"]
    waits = dict(zip(fake.queue_wait.bounds, fake.queue_wait.cumulative, strict=True))
    assert (waits[0.1], waits[0.25], waits[2.5], waits[5.0], waits[60.0], waits[300.0]) == (
        0,
        1,
        1,
        2,
        2,
        3,
    )
    runs = dict(zip(fake.run_time.bounds, fake.run_time.cumulative, strict=True))
    assert (runs[0.25], runs[0.5], runs[2.5], runs[5.0], runs[30.0], runs[60.0]) == (
        0,
        1,
        1,
        2,
        2,
        3,
    )
    assert fake.queue_wait.count == fake.run_time.count == 3
    assert fake.queue_wait.sum_s == pytest.approx(103.2)
    assert fake.run_time.sum_s == pytest.approx(54.3)
    docker = histograms["docker"]
    # Longer than every bound: only in +Inf, which is the count.
    assert docker.queue_wait.cumulative[-1] == 0 and docker.queue_wait.count == 1
    assert docker.run_time.cumulative[-1] == 0 and docker.run_time.sum_s == pytest.approx(700)


def test_automatic_actions_count_what_the_reaper_recorded(
    user: User, runtime: Runtime, settings: Any, orm_broker: None
) -> None:
    abandoned, stalled, untouched = (
        services.evaluation_submit(user=user, runtime=runtime, source="print(1)").executions.get()
        for _ in range(3)
    )
    long_ago = timezone.now() - timedelta(hours=1)
    Execution.objects.filter(pk=abandoned.pk).update(
        status=Status.RUNNING, started_at=long_ago, heartbeat_at=long_ago, deadline_at=long_ago
    )
    Execution.objects.filter(pk=stalled.pk).update(dispatched_at=long_ago)  # its task lost
    services.execution_cancel(user=user, execution=untouched)  # a person's action: not counted

    report = services.recovery_pass()

    assert (report.closed, report.requeued) == (1, 1)
    assert operations.automatic_actions() == {"reap": 1, "requeue": 1, "release": 0, "retry": 0}
    assert AuditEvent.objects.filter(action__in=["submit", "cancel"]).count() == 4


def test_automatic_actions_are_zero_before_any(db: None) -> None:
    assert operations.automatic_actions() == {"reap": 0, "requeue": 0, "release": 0, "retry": 0}


def test_webhook_outcomes_follow_each_attempts_record(evaluation: Evaluation) -> None:
    execution = finished(evaluation, at("12:00:00"), wait_s=1, run_s=1)
    url = "https://hooks.example.org/ended"

    def attempt(number: int, **fields: Any) -> None:
        WebhookDelivery.objects.create(execution=execution, url=url, attempt=number, **fields)

    attempt(1, succeeded=False, duration_ms=5, status_code=500, next_retry_at=NOW)
    attempt(2, succeeded=False, duration_ms=5, error="TimeoutError", next_retry_at=NOW)
    attempt(3, succeeded=False, duration_ms=5, status_code=502)  # the last one: gave up
    other = finished(evaluation, at("12:01:00"), wait_s=1, run_s=1)
    WebhookDelivery.objects.create(
        execution=other, url=url, attempt=1, succeeded=True, duration_ms=3, status_code=204
    )
    # Under way: no outcome yet.
    WebhookDelivery.objects.create(
        execution=finished(evaluation, at("12:02:00"), wait_s=1, run_s=1), url=url, attempt=1
    )

    assert operations.webhook_outcomes() == operations.WebhookOutcomes(
        succeeded=1, retried=2, gave_up=1
    )


def test_schedule_overdue_is_how_late_the_earliest_due_schedule_is(db: None) -> None:
    Schedule.objects.all().delete()
    assert operations.schedule_overdue(NOW) is None
    Schedule.objects.create(
        name="ahead", func="math.floor", schedule_type=Schedule.MINUTES, next_run=NOW
    )
    assert operations.schedule_overdue(NOW) == timedelta(0)
    Schedule.objects.create(
        name="late",
        func="math.floor",
        schedule_type=Schedule.MINUTES,
        next_run=NOW - timedelta(minutes=7),
    )
    # One that already ran its last time is not waiting for anything.
    Schedule.objects.create(
        name="done",
        func="math.floor",
        schedule_type=Schedule.ONCE,
        repeats=0,
        next_run=NOW - timedelta(days=3),
    )
    assert operations.schedule_overdue(NOW) == timedelta(minutes=7)


# The dashboard -----------------------------------------------------------------------------


HOUR = operations.SPANS["hour"]
DAY = operations.SPANS["day"]


def index_of(dashboard: operations.Dashboard, clock: str) -> int:
    return dashboard.starts.index(at(clock))


def series(all_series: tuple[operations.Series, ...], key: str) -> operations.Series:
    return next(one for one in all_series if one.key == key)


def test_the_hour_is_sixty_minutes_ending_with_the_current_one(db: None) -> None:
    dashboard = operations.dashboard(HOUR, now=NOW)
    assert len(dashboard.starts) == 60
    assert dashboard.starts[0] == at("11:31:00") and dashboard.starts[-1] == at("12:30:00")
    day = operations.dashboard(DAY, now=NOW)
    assert len(day.starts) == 24
    assert day.starts[0] == NOW.replace(hour=12, minute=0, second=0) - timedelta(hours=23)


def test_throughput_verdicts_and_failures_by_bucket(evaluation: Evaluation) -> None:
    for _ in range(3):
        finished(evaluation, at("12:10:05"), wait_s=1, run_s=1)
    finished(evaluation, at("12:10:20"), wait_s=1, run_s=1, verdict=Verdict.WRONG_ANSWER)
    for _ in range(2):
        finished(
            evaluation,
            at("12:20:00"),
            wait_s=1,
            run_s=1,
            status=Status.ERROR,
            verdict=Verdict.INTERNAL_ERROR,
            error_kind="worker_lost",
        )
    record(
        evaluation,
        status=Status.REFUSED,
        queued_at=at("12:20:29"),
        finished_at=at("12:20:30"),
        error_kind="refused",
    )
    record(
        evaluation,
        status=Status.CANCELLED,
        queued_at=at("12:29:00"),
        finished_at=at("12:29:59"),
        error_kind="cancelled",
    )
    finished(evaluation, at("11:00:00"), wait_s=1, run_s=1)  # before the hour
    finished(evaluation, at("12:30:10"), wait_s=1, run_s=1)  # in the current minute

    dashboard = operations.dashboard(HOUR, now=NOW)

    ten, twenty = index_of(dashboard, "12:10:00"), index_of(dashboard, "12:20:00")
    accepted = series(dashboard.throughput, "accepted")
    assert accepted.values[ten] == 3 and accepted.values[-1] == 1 and accepted.total == 4
    assert series(dashboard.throughput, "rejected").values[ten] == 1
    assert series(dashboard.throughput, "infrastructure").values[twenty] == 3
    assert series(dashboard.throughput, "cancelled").values[index_of(dashboard, "12:29:00")] == 1
    # Cancelled runs are no failure; the most frequent kind comes first.
    assert [one.key for one in dashboard.failures] == ["worker_lost", "refused"]
    assert series(dashboard.failures, "worker_lost").values[twenty] == 2
    assert series(dashboard.failures, "refused").label == "Refused (execution disabled)"
    assert dashboard.failed == 3
    assert [(o.key, o.count, o.group) for o in dashboard.outcomes] == [
        ("accepted", 4, "accepted"),
        ("internal_error", 2, "infrastructure"),
        ("cancelled", 1, "cancelled"),
        ("refused", 1, "infrastructure"),
        ("wrong_answer", 1, "rejected"),
    ]
    assert dashboard.ended == 9


def test_percentiles_are_nearest_rank_per_bucket_and_over_the_span(
    evaluation: Evaluation,
) -> None:
    for second in range(1, 21):
        finished(evaluation, at("12:10:30"), wait_s=second, run_s=2 * second)
    finished(evaluation, at("12:20:00"), wait_s=100, run_s=7)
    record(  # ended without starting: in no duration
        evaluation,
        status=Status.CANCELLED,
        queued_at=at("12:19:00"),
        finished_at=at("12:20:10"),
        error_kind="cancelled",
    )

    dashboard = operations.dashboard(HOUR, now=NOW)

    ten, twenty = index_of(dashboard, "12:10:00"), index_of(dashboard, "12:20:00")
    p50, p95 = series(dashboard.queue_wait, "p50"), series(dashboard.queue_wait, "p95")
    assert (p50.values[ten], p95.values[ten]) == (10.0, 19.0)
    assert (p50.values[twenty], p95.values[twenty]) == (100.0, 100.0)
    assert p50.values[ten - 1] is None  # no run ended then
    runs50, runs95 = series(dashboard.run_time, "p50"), series(dashboard.run_time, "p95")
    assert (runs50.values[ten], runs95.values[ten]) == (20.0, 38.0)
    assert (runs50.values[twenty], runs95.values[twenty]) == (7.0, 7.0)
    # Over all 21 runs: the 11th and the 20th in order.
    assert (dashboard.queue_wait_overall.p50, dashboard.queue_wait_overall.p95) == (11.0, 20.0)
    assert (dashboard.run_time_overall.p50, dashboard.run_time_overall.p95) == (20.0, 38.0)


def test_without_runs_there_are_no_percentiles(db: None) -> None:
    dashboard = operations.dashboard(HOUR, now=NOW)
    assert dashboard.queue_wait_overall.p50 is None and dashboard.run_time_overall.p95 is None
    assert all(value is None for value in series(dashboard.queue_wait, "p95").values)
    assert dashboard.ended == 0 and dashboard.failures == ()


def test_queue_depth_at_each_buckets_end(evaluation: Evaluation) -> None:
    record(  # queued 12:00, ran 12:05:30 to 12:07
        evaluation,
        status=Status.FINISHED,
        verdict=Verdict.ACCEPTED,
        queued_at=at("12:00:00"),
        started_at=at("12:05:30"),
        finished_at=at("12:07:00"),
    )
    record(evaluation, status=Status.QUEUED, queued_at=at("12:25:00"))
    record(evaluation, status=Status.RUNNING, queued_at=at("12:28:00"), started_at=at("12:28:30"))
    record(  # over before the hour began
        evaluation,
        status=Status.FINISHED,
        verdict=Verdict.ACCEPTED,
        queued_at=at("11:00:00"),
        started_at=at("11:00:01"),
        finished_at=at("11:10:00"),
    )

    dashboard = operations.dashboard(HOUR, now=NOW)

    queued, running = series(dashboard.queue, "queued"), series(dashboard.queue, "running")

    def both(clock: str) -> tuple[float | None, float | None]:
        index = index_of(dashboard, clock)  # the bucket that ends a minute later
        return queued.values[index], running.values[index]

    assert both("11:58:00") == (0, 0)
    assert both("11:59:00") == (1, 0)  # at 12:00, as it was queued
    assert both("12:04:00") == (1, 0)  # at 12:05
    assert both("12:05:00") == (0, 1)  # at 12:06
    assert both("12:07:00") == (0, 0)
    assert both("12:25:00") == (1, 0)
    assert both("12:28:00") == (1, 1)
    assert both("12:30:00") == (1, 1)  # now
    assert (dashboard.queued_now, dashboard.running_now) == (1, 1)
    assert dashboard.oldest_queued_age == timedelta(minutes=5, seconds=30)


@pytest.mark.parametrize("span", ["hour", "day"])
def test_the_dashboard_costs_four_queries_whatever_the_data(
    evaluation: Evaluation, span: str, django_assert_num_queries: Any
) -> None:
    for minute in range(30):
        finished(evaluation, at(f"12:{minute:02}:00"), wait_s=minute, run_s=1)
        record(evaluation, status=Status.QUEUED, queued_at=at(f"12:{minute:02}:30"))
    with django_assert_num_queries(4):
        dashboard = operations.dashboard(operations.SPANS[span], now=NOW)
    assert dashboard.ended == 30 and dashboard.queued_now == 30


@pytest.mark.parametrize(
    ("status", "verdict", "group"),
    [
        ("finished", "accepted", "accepted"),
        ("finished", "time_limit", "rejected"),
        ("finished", "compilation_error", "rejected"),
        ("error", "internal_error", "infrastructure"),
        ("refused", "", "infrastructure"),
        ("cancelled", "", "cancelled"),
    ],
)
def test_throughput_classes(status: str, verdict: str, group: str) -> None:
    assert operations.throughput_class(status, verdict) == group


# Health of each part -----------------------------------------------------------------------


@pytest.fixture
def silent_service() -> Iterator[str]:
    """An address that accepts connections and never answers: a hung execution service."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def probe_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("probe-backend")]


def test_a_hung_backend_is_unhealthy_within_the_timeout_and_holds_one_thread(
    bare_machine: Path, settings: Any, silent_service: str
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND_OPTIONS": {
            "remote": {"urls": (silent_service,), "secret": SECRET, "timeout_s": 30}
        },
    }
    for _ in range(3):
        started = time.monotonic()
        fake, remote = operations.backends_health(timeout_s=0.5)
        assert time.monotonic() - started < 2
        assert (fake.name, fake.active, fake.ok) == ("fake", True, True)
        assert (remote.name, remote.active, remote.ok) == ("remote", False, False)
        assert remote.detail == "No answer within 0.5 s."
    hung = [thread for thread in probe_threads() if thread.name.startswith("probe-backend-remote")]
    assert len(hung) == 1


def test_an_unreachable_backend_says_why(bare_machine: Path, settings: Any) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND_OPTIONS": {"remote": {"urls": ("http://127.0.0.1:9",), "secret": SECRET}},
    }
    _fake, remote = operations.backends_health()
    assert not remote.ok and "unreachable" in remote.detail


def test_a_disabled_platform_shows_its_backend_as_not_healthy(
    bare_machine: Path, settings: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "disabled"}
    (disabled,) = operations.backends_health()
    assert (disabled.name, disabled.active, disabled.ok) == ("disabled", True, False)
    assert "disabled" in disabled.detail


def health(parts: list[operations.PartHealth]) -> dict[str, operations.PartHealth]:
    return {part.key: part for part in parts}


def test_parts_answer_with_the_database_broker_and_backends(bare_machine: Path) -> None:
    parts = health(operations.parts_health())
    assert list(parts) == ["database", "broker", "cluster", "backend-fake"]
    assert parts["database"].ok and "answered in" in parts["database"].detail
    assert parts["broker"].ok and "task(s) waiting" in parts["broker"].detail
    assert parts["backend-fake"].ok and parts["backend-fake"].name == "Backend fake (active)"


def test_a_hung_broker_cannot_hold_the_page(
    bare_machine: Path, monkeypatch: pytest.MonkeyPatch, silent_service: str
) -> None:
    # A Redis broker at an address that accepts connections and never answers.
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", None)
    monkeypatch.setattr(Conf, "REDIS", silent_service.replace("http://", "redis://") + "/0")
    started = time.monotonic()
    parts = health(operations.parts_health(timeout_s=0.5))
    assert time.monotonic() - started < 2
    assert parts["broker"].ok is False
    assert parts["broker"].detail == "No answer within 0.5 s."
    assert parts["database"].ok and parts["backend-fake"].ok


def test_the_cluster_is_judged_by_the_beats_of_its_recovery_lane(db: None) -> None:
    now = timezone.now()
    cluster = health(operations.parts_health(now=now))["cluster"]
    assert cluster.ok is False and "manage.py qcluster" in cluster.detail
    services.cluster_beat("node-1:41", started_at=now - timedelta(hours=2))
    cluster = health(operations.parts_health(now=timezone.now()))["cluster"]
    assert cluster.ok and cluster.detail.startswith("1 alive: node-1:41 (beat 0 s ago")
    silence = operations.cluster_silence()
    later = timezone.now() + silence + timedelta(seconds=1)
    assert health(operations.parts_health(now=later))["cluster"].ok is False
    services.cluster_gone("node-1:41")
    assert not ClusterBeat.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_running_cluster_is_seen_healthy(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch, bare_machine: Path
) -> None:
    """A real ``qcluster``: its recovery lane beats, with either broker, and the health sees
    it alive; stopped, it is gone at once."""
    assert health(operations.parts_health())["cluster"].ok is False
    with clusters(tmp_path, settings, monkeypatch, EXECUTION_BACKEND="fake") as start:
        # Where this process looks for the status of the cluster named for this test.
        monkeypatch.setattr(Conf, "Q_STAT", f"django_q:{Conf.PREFIX}:cluster")
        start()
        wait_for(
            lambda: bool(health(operations.parts_health())["cluster"].ok),
            timeout=90,
            what="the cluster's recovery lane to beat",
            log=tmp_path / "cluster.log",
        )
        assert "1 alive" in health(operations.parts_health())["cluster"].detail
    assert health(operations.parts_health())["cluster"].ok is False, "a clean stop forgets it"
