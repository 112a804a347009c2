"""The one time budget: each bound is the wall time plus the same allowances, so the task
queue, the reaper and both janitors agree on how long a run may take."""

from __future__ import annotations

import dataclasses

import pytest

from sandbox import budget
from sandbox.contract import CompileStep, Session
from sandbox.docker import DockerBackend
from sandbox.policy import Limits, SandboxPolicy


def test_a_run_is_its_wall_time_the_overhead_and_the_start_up_allowance() -> None:
    assert budget.run_s(2.5) == 2.5 + budget.RUN_OVERHEAD_S
    assert budget.run_s(2.5, start_allowance_s=60) == 2.5 + budget.RUN_OVERHEAD_S + 60


def test_an_orphan_is_older_than_the_longest_run_after_the_longest_slot_wait() -> None:
    age = budget.orphan_age_s(60, start_allowance_s=5, slot_wait_s=30, grace_s=7)
    assert age == budget.run_s(60, start_allowance_s=5) + 30 + 7
    assert age > budget.run_s(60, start_allowance_s=5) + 30


def test_a_session_is_every_step_with_its_overhead_and_one_start_up_allowance() -> None:
    assert budget.session_s(2.5, 1) == budget.run_s(2.5)
    twenty_one = budget.session_s(2.0, 21, start_allowance_s=60)
    assert twenty_one == 21 * (2 + budget.RUN_OVERHEAD_S) + 60
    # The janitor spares a whole session: an orphan is older than its longest.
    age = budget.orphan_age_s(60, start_allowance_s=5, slot_wait_s=30, grace_s=7, steps=51)
    assert age == budget.session_s(60, 51, start_allowance_s=5) + 30 + 7


def test_a_sessions_wall_time_is_its_compile_steps_and_every_cases() -> None:
    session = Session(
        execution_id=1,
        handle="s",
        image="img",
        command=("./main",),
        files={},
        policy=SandboxPolicy(limits=Limits(wall_time_ms=1500, memory_mb=64, output_bytes=10)),
        stdins=[b"a", b"b", b"c"],
    )
    assert budget.session_wall_s(session) == 3 * 1.5
    compiling = Limits(wall_time_ms=10_000, memory_mb=256, output_bytes=10)
    with_compile = dataclasses.replace(session, compile=CompileStep(("cc",), compiling))
    assert budget.session_wall_s(with_compile) == 10 + 3 * 1.5


@pytest.mark.parametrize(("wall_s", "runs"), [(60, 50), (1, 0), (30, 1)])
def test_the_task_queue_outlasts_every_run_of_the_largest_task(wall_s: int, runs: int) -> None:
    timeout = budget.task_queue_timeout_s(wall_s, runs)
    assert timeout == (wall_s + budget.RUN_OVERHEAD_S) * (runs + 1)
    assert timeout >= max(1, runs) * budget.run_s(wall_s)


def test_the_service_janitor_spares_any_run_the_docker_runner_can_still_be_making() -> None:
    # The janitor at start of python -m execution_service: a live run holds its sandbox for
    # at most the slot wait, then the wall time and the overhead.
    runner = DockerBackend(lock_dir="/nonexistent-slots")
    age = budget.orphan_age_s(
        30,
        start_allowance_s=runner.start_allowance_s,
        slot_wait_s=runner.slot_wait_s,
        grace_s=budget.SERVICE_ORPHAN_GRACE_S,
    )
    assert runner.slot_wait_s == runner.options.slot_wait_s > 0
    assert age == 30 + 60  # as before the budget was one module: the cap plus a minute
    assert age > 30 + budget.RUN_OVERHEAD_S + runner.slot_wait_s
