"""The platform's time budget: the task timeout, a claimed run's deadline, the orphan age.

Each is ``sandbox.budget``'s arithmetic applied to this deployment: the runtime's or the
evaluation's limits, the number of runs, the backend's own start-up allowance and slot wait,
and ``REAPER_GRACE_S``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from executions.backends import get_backend
from executions.conf import execution_settings
from sandbox import budget
from sandbox.contract import ExecutionBackend

if TYPE_CHECKING:
    from executions.models import Evaluation, Execution, Runtime


def _backend(name: str) -> ExecutionBackend | None:
    """The backend called ``name`` (the active one for ""), or None when it cannot be built:
    an unusable backend fails the run itself, with its own message."""
    try:
        return get_backend(name or None)
    except Exception:
        return None


def start_allowance_s(backend: str) -> int:
    """What the backend called ``backend`` may need before a program starts (0 if unknown)."""
    found = _backend(backend)
    return math.ceil(found.start_allowance_s) if found else 0


def slot_wait_s(backend: str) -> float:
    """How long a run on ``backend`` may wait for a free sandbox (0 if unknown)."""
    found = _backend(backend)
    return found.slot_wait_s if found else 0.0


def _compile_s(runtime: Runtime, allowance_s: float) -> float:
    """What the runtime's compile step may take, as one more run (0 without one)."""
    if not runtime.compiles:
        return 0.0
    return budget.run_s(
        math.ceil(runtime.compile_time_limit_ms / 1000), start_allowance_s=allowance_s
    )


def task_timeout_s(evaluation: Evaluation, *, backend: str = "") -> int:
    """The task queue's timeout for one execution, from its runtime's maximum wall time (and
    compile time limit) and the start-up allowance of the backend that will run it."""
    runs = max(1, evaluation.test_cases.count())
    allowance_s = start_allowance_s(backend)
    per_run = budget.run_s(
        math.ceil(evaluation.runtime.max_time_limit_ms / 1000), start_allowance_s=allowance_s
    )
    total = runs * per_run + _compile_s(evaluation.runtime, allowance_s)
    return int(total) + execution_settings.REAPER_GRACE_S


def claim_deadline(execution: Execution, *, now: datetime) -> datetime:
    """When a run claimed at ``now`` must have ended: each of its runs (one per test case, at
    least one) gets the evaluation's time limit, the overhead and the start-up allowance of
    the execution's backend; a compile step is one more run, at the runtime's compile time
    limit."""
    runs = max(1, execution.evaluation.test_cases.count())
    allowance_s = start_allowance_s(execution.backend)
    per_run_s = budget.run_s(
        execution.evaluation.time_limit_ms / 1000, start_allowance_s=allowance_s
    )
    total_s = runs * per_run_s + _compile_s(execution.evaluation.runtime, allowance_s)
    return now + timedelta(seconds=total_s)


def orphan_age_s() -> int:
    """Older than any session on the active backend can be (one sandbox holds a whole
    execution: a compile step and up to ``MAX_TEST_CASES`` cases, each at the hard maximum
    wall time): a sandbox this old was left behind by a dead worker."""
    return math.ceil(
        budget.orphan_age_s(
            execution_settings.HARD_MAX_WALL_TIME_MS // 1000,
            start_allowance_s=start_allowance_s(""),
            slot_wait_s=slot_wait_s(""),
            grace_s=execution_settings.REAPER_GRACE_S,
            steps=execution_settings.MAX_TEST_CASES + 1,
        )
    )
