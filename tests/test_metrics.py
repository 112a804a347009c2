"""The Prometheus collector's output for known executions, parsed as Prometheus parses it; a
scrape costs a fixed number of queries, and a hung backend cannot hang it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from django_q.models import Schedule
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from executions import metrics, operations, services
from executions.models import Evaluation, Execution, Runtime, Status, Verdict, WebhookDelivery
from tests.records import evaluation_of, finished, record

pytestmark = pytest.mark.django_db

SECRET = "s" * 48


def scrape(accept: str = "") -> dict[str, list[Sample]]:
    """Each metric family's samples, as Prometheus reads the text format."""
    body, content_type = metrics.exposition(accept)
    assert content_type.startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(body.decode())}


def value(families: dict[str, list[Sample]], family: str, sample: str, **labels: str) -> float:
    found = [s.value for s in families[family] if s.name == sample and s.labels == labels]
    assert len(found) == 1, (sample, labels, families[family])
    return found[0]


@pytest.fixture
def evaluation(user: User, runtime: Runtime) -> Evaluation:
    return evaluation_of(user, runtime)


def test_a_scrape_reports_the_queue_the_executions_and_their_durations(
    evaluation: Evaluation, compiling_runtime: Runtime, bare_machine: Path
) -> None:
    now = timezone.now()
    for wait_s, run_s in ((0.2, 0.3), (3, 4), (100, 50)):
        finished(evaluation, now - timedelta(minutes=30), wait_s=wait_s, run_s=run_s)
    finished(
        evaluation_of(evaluation.owner, compiling_runtime),
        now - timedelta(minutes=20),
        wait_s=1,
        run_s=1,
        verdict=Verdict.COMPILATION_ERROR,
    )
    finished(
        evaluation,
        now - timedelta(minutes=10),
        wait_s=1,
        run_s=40,
        status=Status.ERROR,
        verdict=Verdict.INTERNAL_ERROR,
        error_kind="worker_lost",
    )
    record(evaluation, status=Status.QUEUED, queued_at=now - timedelta(minutes=5))
    record(evaluation, status=Status.QUEUED, queued_at=now - timedelta(minutes=1))
    record(
        evaluation,
        status=Status.RUNNING,
        queued_at=now - timedelta(seconds=3),
        started_at=now - timedelta(seconds=2),
    )

    families = scrape()

    assert value(families, "evalplatform_queue_depth", "evalplatform_queue_depth") == 2
    age = value(
        families, "evalplatform_queue_oldest_age_seconds", "evalplatform_queue_oldest_age_seconds"
    )
    assert 300 <= age < 330
    active = "evalplatform_executions_active"
    python = {"backend": "fake", "runtime": "python-3.11"}
    assert value(families, active, active, status="queued", **python) == 2
    assert value(families, active, active, status="running", **python) == 1
    ended, total = "evalplatform_executions_ended", "evalplatform_executions_ended_total"
    accepted = {"status": "finished", "verdict": "accepted", "error_kind": ""}
    assert value(families, ended, total, **accepted, **python) == 3
    lost = {"status": "error", "verdict": "internal_error", "error_kind": "worker_lost"}
    assert value(families, ended, total, **lost, **python) == 1
    compile_error = {"status": "finished", "verdict": "compilation_error", "error_kind": ""}
    assert value(families, ended, total, **compile_error, backend="fake", runtime="c-gcc") == 1
    assert len(families[ended]) == 3  # no row for what has not ended

    wait = "evalplatform_execution_queue_wait_seconds"
    assert value(families, wait, f"{wait}_bucket", backend="fake", le="0.25") == 1
    assert value(families, wait, f"{wait}_bucket", backend="fake", le="5.0") == 4
    assert value(families, wait, f"{wait}_bucket", backend="fake", le="300.0") == 5
    assert value(families, wait, f"{wait}_bucket", backend="fake", le="+Inf") == 5
    assert value(families, wait, f"{wait}_count", backend="fake") == 5
    assert value(families, wait, f"{wait}_sum", backend="fake") == pytest.approx(105.2)
    run = "evalplatform_execution_run_seconds"
    assert value(families, run, f"{run}_bucket", backend="fake", le="0.5") == 1
    assert value(families, run, f"{run}_bucket", backend="fake", le="30.0") == 3
    assert value(families, run, f"{run}_bucket", backend="fake", le="60.0") == 5
    assert value(families, run, f"{run}_sum", backend="fake") == pytest.approx(95.3)

    up = "evalplatform_backend_up"
    assert value(families, up, up, backend="fake", active="true") == 1
    assert families["evalplatform_backend_capacity"] == []  # the fake reports none


def test_a_scrape_counts_the_reapers_actions_and_webhook_outcomes(
    user: User, runtime: Runtime, bare_machine: Path, orm_broker: None
) -> None:
    abandoned, stalled = (
        services.evaluation_submit(user=user, runtime=runtime, source="print(1)").executions.get()
        for _ in range(2)
    )
    long_ago = timezone.now() - timedelta(hours=1)
    Execution.objects.filter(pk=abandoned.pk).update(
        status=Status.RUNNING, started_at=long_ago, heartbeat_at=long_ago, deadline_at=long_ago
    )
    Execution.objects.filter(pk=stalled.pk).update(dispatched_at=long_ago)  # its task lost
    services.recovery_pass()
    url = "https://hooks.example.org/ended"
    WebhookDelivery.objects.create(
        execution=abandoned, url=url, attempt=1, duration_ms=9, next_retry_at=timezone.now()
    )
    WebhookDelivery.objects.create(
        execution=abandoned, url=url, attempt=2, duration_ms=9, succeeded=True, status_code=200
    )

    families = scrape()

    actions, total = "evalplatform_automatic_actions", "evalplatform_automatic_actions_total"
    assert value(families, actions, total, action="reap") == 1
    assert value(families, actions, total, action="requeue") == 1
    hooks, total = "evalplatform_webhook_deliveries", "evalplatform_webhook_deliveries_total"
    assert value(families, hooks, total, outcome="succeeded") == 1
    assert value(families, hooks, total, outcome="retried") == 1
    assert value(families, hooks, total, outcome="gave_up") == 0
    ended = "evalplatform_executions_ended"
    lost = [s for s in families[ended] if s.labels["error_kind"] == "worker_lost"]
    assert [s.value for s in lost] == [1]


def test_an_overdue_schedule_is_reported(db: None, bare_machine: Path) -> None:
    Schedule.objects.all().delete()
    overdue = "evalplatform_task_schedule_overdue_seconds"
    assert value(scrape(), overdue, overdue) == 0
    Schedule.objects.create(
        name="webhook-1-2",
        func="executions.tasks.deliver_webhook",
        args="1, 2",
        schedule_type=Schedule.ONCE,
        repeats=1,
        next_run=timezone.now() - timedelta(minutes=10),
    )
    assert 600 <= value(scrape(), overdue, overdue) < 630


def test_every_family_is_there_on_an_empty_platform(db: None, bare_machine: Path) -> None:
    families = scrape()
    assert set(families) == {
        "evalplatform_queue_depth",
        "evalplatform_queue_oldest_age_seconds",
        "evalplatform_executions_active",
        "evalplatform_executions_ended",
        "evalplatform_execution_queue_wait_seconds",
        "evalplatform_execution_run_seconds",
        "evalplatform_backend_up",
        "evalplatform_backend_capacity",
        "evalplatform_backend_in_use",
        "evalplatform_automatic_actions",
        "evalplatform_webhook_deliveries",
        "evalplatform_task_schedule_overdue_seconds",
        "evalplatform_clusters_alive",
        "evalplatform_runtimes",
    }
    assert value(families, "evalplatform_queue_depth", "evalplatform_queue_depth") == 0


def test_the_queries_per_scrape_do_not_grow_with_the_data(
    evaluation: Evaluation, django_assert_max_num_queries: Any, bare_machine: Path
) -> None:
    now = timezone.now()
    for index in range(60):
        finished(
            evaluation,
            now - timedelta(minutes=index),
            wait_s=index,
            run_s=1,
            backend=f"b{index % 3}",
        )
        record(evaluation, status=Status.QUEUED, queued_at=now - timedelta(seconds=index))
    with django_assert_max_num_queries(7):
        families = scrape()
    assert value(families, "evalplatform_queue_depth", "evalplatform_queue_depth") == 60


def test_runtimes_are_counted_by_self_test(db: None, bare_machine: Path) -> None:
    for name, status in (("a", "passed"), ("b", "passed"), ("c", "failed"), ("d", "untested")):
        Runtime.objects.create(
            name=name, display_name=name, image="x", command=["x"], self_test_status=status
        )
    Runtime.objects.create(name="off", display_name="off", image="x", command=["x"], enabled=False)
    counts = {
        sample.labels["self_test"]: sample.value for sample in scrape()["evalplatform_runtimes"]
    }
    assert counts == {"passed": 2, "failed": 1, "untested": 1}


def test_openmetrics_when_the_scraper_asks_for_it(db: None, bare_machine: Path) -> None:
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    names = {family.name for family in openmetrics_families(body.decode())}
    assert "evalplatform_executions_ended" in names and body.endswith(b"# EOF\n")


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


def test_a_hung_backend_cannot_hang_the_scrape(
    db: None, bare_machine: Path, settings: Any, silent_service: str
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND_OPTIONS": {
            "remote": {"urls": (silent_service,), "secret": SECRET, "timeout_s": 60}
        },
    }
    started = time.monotonic()
    families = scrape()
    assert time.monotonic() - started < operations.PROBE_TIMEOUT_S + 2
    up = "evalplatform_backend_up"
    assert value(families, up, up, backend="remote", active="false") == 0
    assert value(families, up, up, backend="fake", active="true") == 1
