"""Dispatch through a real ``manage.py qcluster`` process, on the ORM broker and on Redis.

These start the cluster as a subprocess against the test database, so they use committed
transactions (``transactional_db``).
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django_q.conf import Conf
from django_q.models import Success
from django_q.tasks import async_task

from executions import services
from executions.models import Execution, Runtime
from tests.cluster import ClusterFactory, clusters, wait_for
from tests.conftest import require_real

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(params=["orm", "redis"])
def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClusterFactory]:
    """Clusters on the ORM broker, then on Redis; this process enqueues to the same one."""
    environ = {
        "EXECUTION_BACKEND": "fake",
        "EXECUTION_FAKE_RUN_LOG": str(tmp_path / "runs.log"),
    }
    if request.param == "redis":
        import redis

        try:
            redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            require_real("Redis", f"{REDIS_URL}: {exc}")
        monkeypatch.setattr(Conf, "ORM", None)
        monkeypatch.setattr(Conf, "BROKER_CLASS", None)
        monkeypatch.setattr(Conf, "REDIS", REDIS_URL)
        environ["REDIS_URL"] = REDIS_URL
    else:
        monkeypatch.setattr(Conf, "ORM", "default")
    with clusters(tmp_path, settings, monkeypatch, **environ) as start:
        yield start


def fake(**spec: Any) -> str:
    return f"# fake: {json.dumps(spec)}\n"


def runs_logged(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs.log"
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def fake_backend(settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "fake"}


def test_cluster_runs_a_submission_to_a_terminal_state(
    cluster: Callable[[], Any], user: Any, runtime: Runtime, tmp_path: Path, fake_backend: None
) -> None:
    cluster()
    evaluation = services.evaluation_submit(
        user=user,
        runtime=runtime,
        source="print(input())",
        test_cases=[
            {"stdin": "1\n", "expected_output": "1"},
            {"stdin": "2\n", "expected_output": "3"},
        ],
    )
    execution = evaluation.executions.get()
    wait_for(
        lambda: Execution.objects.get(pk=execution.pk).status == "finished",
        60,
        "the execution to finish",
        tmp_path / "cluster.log",
    )
    execution.refresh_from_db()
    assert (execution.verdict, str(execution.score)) == ("wrong_answer", "50.00")
    assert list(execution.results.values_list("verdict", flat=True)) == ["accepted", "wrong_answer"]
    assert len(runs_logged(tmp_path)) == 2


def test_a_crashed_cluster_leaves_no_run_behind_and_nothing_runs_twice(
    cluster: Callable[[], Any],
    user: Any,
    runtime: Runtime,
    tmp_path: Path,
    settings: Any,
    fake_backend: None,
) -> None:
    first = cluster()
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source=fake(delay=60))
    execution = evaluation.executions.get()
    wait_for(
        lambda: (
            Execution.objects.get(pk=execution.pk).status == "running"
            and bool(runs_logged(tmp_path))
        ),
        60,
        "the slow run to start",
        tmp_path / "cluster.log",
    )

    os.killpg(first.pid, signal.SIGKILL)  # the whole cluster dies mid-run, as in an OOM kill
    first.wait()
    cluster()

    # The dead worker's heartbeat stops; the reaper closes the run.
    settings.EXECUTIONS = {**settings.EXECUTIONS, "HEARTBEAT_TIMEOUT_S": 3}

    def reaped() -> bool:
        services.executions_reap()
        return Execution.objects.get(pk=execution.pk).status != "running"

    wait_for(reaped, 30, "the reaper to close the run")
    execution.refresh_from_db()
    assert (execution.status, execution.error_kind) == ("error", "worker_lost")
    assert execution.finished_at is not None

    # The same task delivered again (as a broker redelivers a lost one) does not run again.
    task_id = async_task("executions.tasks.run_execution", execution.pk, save=True)
    wait_for(
        lambda: Success.objects.filter(id=task_id).exists(),
        60,
        "the redelivered task",
        tmp_path / "cluster.log",
    )
    execution.refresh_from_db()
    assert execution.status == "error"
    (handle,) = runs_logged(tmp_path)  # the backend ran it once
    assert re.fullmatch(rf"evalplatform-{execution.pk}-[0-9a-f]{{6}}-0", handle)
