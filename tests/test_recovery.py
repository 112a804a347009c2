"""The recovery lane: one tick closes abandoned runs, sends lost tasks, removes orphans, and
rides out a database or backend outage."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone

from executions import services
from executions.backends.fake import FakeBackend
from executions.models import ClusterBeat, Execution, Runtime
from executions.recovery import RecoveryLane
from sandbox.contract import Health
from tests.services.conftest import latest, submit

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lane(clock: Clock) -> RecoveryLane:
    return RecoveryLane(clock=clock)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr("executions.services.dispatch.execution_dispatch", sent.append)
    return sent


def abandon(execution: Execution) -> None:
    long_ago = timezone.now() - timedelta(minutes=5)
    Execution.objects.filter(pk=execution.pk).update(
        status="running", heartbeat_at=long_ago, deadline_at=timezone.now() + timedelta(hours=1)
    )


def backend_health(monkeypatch: pytest.MonkeyPatch, ok: bool) -> None:
    monkeypatch.setattr(FakeBackend, "health", lambda self: Health(ok=ok, detail="engine says"))


def test_a_tick_closes_abandoned_runs_and_sends_unsent_tasks(
    lane: RecoveryLane, user: Any, runtime: Runtime, sent: list[int]
) -> None:
    abandoned, unsent = latest(submit(user, runtime)), latest(submit(user, runtime))
    abandon(abandoned)
    Execution.objects.filter(pk=unsent.pk).update(dispatched_at=None)
    sent.clear()  # what the submissions sent
    lane.tick()
    abandoned.refresh_from_db()
    assert (abandoned.status, abandoned.error_kind) == ("error", "worker_lost")
    assert sent == [unsent.pk]
    assert ClusterBeat.objects.get().name == lane.name, "the lane says its cluster is alive"


def test_dispatch_waits_while_the_backend_does_not_answer(
    lane: RecoveryLane,
    user: Any,
    runtime: Runtime,
    sent: list[int],
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    janitor: list[int] = []

    def remove_orphans() -> int:
        janitor.append(1)
        return 0

    monkeypatch.setattr(services, "sandboxes_janitor", remove_orphans)
    lane.tick()
    assert janitor == [1]
    backend_health(monkeypatch, ok=False)
    execution = latest(submit(user, runtime))
    Execution.objects.filter(pk=execution.pk).update(dispatched_at=None)
    sent.clear()
    lane.tick()
    assert sent == [] and lane.backend_down
    backend_health(monkeypatch, ok=True)
    clock.now += 5  # long before the janitor's next turn: the backend's return calls it
    lane.tick()
    assert sent == [execution.pk] and not lane.backend_down
    assert janitor == [1, 1]


def test_after_a_database_outage_heartbeats_are_not_judged_for_a_timeout(
    lane: RecoveryLane,
    user: Any,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
    settings: Any,
    caplog: Any,
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "HEARTBEAT_TIMEOUT_S": 30}
    execution = latest(submit(user, runtime))
    real_reap = services.executions_reap

    def database_down(**kwargs: Any) -> Any:
        raise OperationalError("connection to server at 127.0.0.1 port 5432 failed")

    monkeypatch.setattr(services, "executions_reap", database_down)
    lane.tick()
    lane.tick()
    assert lane.database_down
    assert caplog.text.count("the database does not answer") == 1, "rate-limited"
    monkeypatch.setattr(services, "executions_reap", real_reap)
    abandon(execution)  # its worker could not beat while the database was down
    clock.now += 2
    lane.tick()
    execution.refresh_from_db()
    assert execution.status == "running" and not lane.database_down
    clock.now += 31
    lane.tick()
    execution.refresh_from_db()
    assert execution.status == "error"


def test_cluster_health_says_whether_a_cluster_on_this_host_beats(lane: RecoveryLane) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="No cluster on"):
        call_command("cluster_health")
    lane.tick()
    call_command("cluster_health")
    services.cluster_gone(lane.name)
    with pytest.raises(CommandError):
        call_command("cluster_health")
