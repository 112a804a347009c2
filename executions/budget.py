"""The time budget of a run: how long the task queue, a claimed run and a sandbox may last.

Each is the wall-time limit plus what a backend needs around a run (``RUN_OVERHEAD_S``) and
before it starts (the backend's start-up allowance), so the task queue's timeout, the
deadline the reaper enforces and the age at which a sandbox counts as orphaned all agree.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from executions.backends import get_backend
from executions.conf import execution_settings

if TYPE_CHECKING:
    from executions.models import Evaluation, Execution

# Time a backend may need around a run (create, start, remove), on top of its wall limit.
RUN_OVERHEAD_S = 10
# A run may wait this long for a free sandbox slot on its node before it starts.
ORPHAN_SLOT_WAIT_S = 30


def start_allowance_s(backend: str) -> int:
    """What the backend called ``backend`` may need before a program starts (0 if unknown)."""
    try:
        return math.ceil(get_backend(backend or None).start_allowance_s)
    except Exception:  # an unusable backend fails the run itself, with its own message
        return 0


def task_timeout_s(evaluation: Evaluation, *, backend: str = "") -> int:
    """The task queue's timeout for one execution, from its runtime's maximum wall time and
    the start-up allowance of the backend that will run it."""
    runs = max(1, evaluation.test_cases.count())
    per_run = (
        math.ceil(evaluation.runtime.max_time_limit_ms / 1000)
        + RUN_OVERHEAD_S
        + start_allowance_s(backend)
    )
    return runs * per_run + execution_settings.REAPER_GRACE_S


def claim_deadline(execution: Execution, *, now: datetime) -> datetime:
    """When a run claimed at ``now`` must have ended: each of its runs (one per test case, at
    least one) gets the evaluation's time limit, the overhead and the start-up allowance of
    the execution's backend."""
    runs = max(1, execution.evaluation.test_cases.count())
    per_run_s = (
        execution.evaluation.time_limit_ms / 1000
        + RUN_OVERHEAD_S
        + start_allowance_s(execution.backend)
    )
    return now + timedelta(seconds=runs * per_run_s)


def orphan_age_s() -> int:
    """Older than any run can be: a sandbox this old was left behind by a dead worker."""
    return (
        execution_settings.HARD_MAX_WALL_TIME_MS // 1000
        + RUN_OVERHEAD_S
        + start_allowance_s("")
        + ORPHAN_SLOT_WAIT_S
        + execution_settings.REAPER_GRACE_S
    )
