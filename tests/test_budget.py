"""The time budget of a run: the task queue's timeout and a claimed run's deadline follow the
runtime's limits and the backend's start-up allowance."""

from __future__ import annotations

from typing import Any

import pytest

from executions import budget, services
from executions.backends.fake import FakeBackend
from executions.models import Runtime
from executions.models import TestResult as CaseResult
from sandbox.budget import RUN_OVERHEAD_S
from tests.services.conftest import submit

pytestmark = pytest.mark.django_db


def test_task_timeout_follows_the_runtime_maximum(user: Any, runtime: Runtime) -> None:
    evaluation = submit(user, runtime, test_cases=[{"stdin": "1"}, {"stdin": "2"}])
    # Two runs, each up to the runtime's 10 s cap plus overhead, plus the reaper's grace.
    assert budget.task_timeout_s(evaluation) == 2 * (10 + RUN_OVERHEAD_S) + 30
    assert CaseResult.objects.count() == 0


def test_a_compile_step_is_one_more_run_at_the_compile_time_limit(
    user: Any, compiling_runtime: Runtime
) -> None:
    evaluation = submit(user, compiling_runtime, test_cases=[{"stdin": "1"}, {"stdin": "2"}])
    # Two cases at the runtime's 10 s cap and a compile step at its 7 s, each plus overhead.
    assert (
        budget.task_timeout_s(evaluation) == 2 * (10 + RUN_OVERHEAD_S) + (7 + RUN_OVERHEAD_S) + 30
    )
    execution = services.execution_claim(evaluation.executions.get().pk)
    assert execution is not None and execution.deadline_at and execution.started_at
    allowed = (execution.deadline_at - execution.started_at).total_seconds()
    case_s = evaluation.time_limit_ms / 1000 + RUN_OVERHEAD_S
    assert allowed == pytest.approx(2 * case_s + 7 + RUN_OVERHEAD_S)


def test_a_backends_start_allowance_extends_timeouts_and_deadlines(
    user: Any, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend that may wait to start a sandbox (a pod being scheduled) gets that time on
    top of the wall time, so the reaper does not close a run that is still starting."""
    evaluation = submit(user, runtime, test_cases=[{"stdin": "1"}, {"stdin": "2"}])
    plain_timeout = budget.task_timeout_s(evaluation, backend="fake")
    plain_orphan_age = budget.orphan_age_s()
    monkeypatch.setattr(FakeBackend, "start_allowance_s", 45.0)
    assert budget.task_timeout_s(evaluation, backend="fake") == plain_timeout + 2 * 45
    assert budget.orphan_age_s() == plain_orphan_age + 45

    execution = services.execution_claim(evaluation.executions.get().pk)
    assert execution is not None and execution.deadline_at is not None
    assert execution.started_at is not None
    allowed = (execution.deadline_at - execution.started_at).total_seconds()
    per_run = evaluation.time_limit_ms / 1000 + RUN_OVERHEAD_S + 45
    assert allowed == pytest.approx(2 * per_run)


def test_the_janitor_spares_the_longest_session(settings: Any) -> None:
    # One sandbox holds a whole execution: its compile step and every case at the hard cap.
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "MAX_TEST_CASES": 20,
        "HARD_MAX_WALL_TIME_MS": 30_000,
        "REAPER_GRACE_S": 30,
    }
    longest = 21 * (30 + RUN_OVERHEAD_S)
    assert budget.orphan_age_s() >= longest + 30
