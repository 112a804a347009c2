"""How long a run may take: the one time budget every bound is computed from.

A sandbox run lasts at most its wall time plus what its backend needs around it
(``RUN_OVERHEAD_S``: create, start, remove) and before it (the backend's start-up
allowance), after waiting at most the backend's slot wait for a free sandbox. A session is
bounded as if each of its steps (the compile step, then every case) were a run. The platform's
task timeout, the deadline of a claimed run and the orphan age of its janitor
(``executions.budget``), the task queue's own timeout (``evalplatform.settings``) and the
execution service's janitor all come from these functions, so they agree.
"""

from __future__ import annotations

from sandbox.contract import Session

# Time a backend may need around a run (create, start, remove), on top of its wall limit.
RUN_OVERHEAD_S = 10
# The execution service's janitor: beyond the longest live run, this much more before a
# sandbox counts as left behind.
SERVICE_ORPHAN_GRACE_S = 20


def run_s(wall_time_s: float, *, start_allowance_s: float = 0.0) -> float:
    """The longest one sandbox run may take once it holds a slot."""
    return wall_time_s + RUN_OVERHEAD_S + start_allowance_s


def session_s(max_wall_time_s: float, steps: int, *, start_allowance_s: float = 0.0) -> float:
    """The longest a session of ``steps`` steps (its compile step and cases) may take once it
    holds a slot: one sandbox, each step at most its wall time plus the overhead around it."""
    return steps * (max_wall_time_s + RUN_OVERHEAD_S) + start_allowance_s


def session_wall_s(session: Session) -> float:
    """The wall times of every step of ``session`` added up: its compile step's and each
    case's."""
    compile_s = session.compile.limits.wall_time_s if session.compile is not None else 0.0
    return compile_s + len(session.stdins) * session.limits.wall_time_s


def orphan_age_s(
    max_wall_time_s: float,
    *,
    start_allowance_s: float,
    slot_wait_s: float,
    grace_s: float,
    steps: int = 1,
) -> float:
    """Older than any live sandbox can be: the longest session of ``steps`` steps, after the
    longest wait for a slot, plus ``grace_s``. A sandbox this old was left behind by a worker
    that died."""
    longest = session_s(max_wall_time_s, steps, start_allowance_s=start_allowance_s)
    return longest + slot_wait_s + grace_s


def task_queue_timeout_s(max_wall_time_s: int, max_runs: int) -> int:
    """The task queue's own timeout, above any single task's: one run more than the most
    runs a task holds, each at the hard maximum wall time."""
    return int(run_s(max_wall_time_s)) * (max_runs + 1)
