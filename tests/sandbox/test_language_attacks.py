"""Hostile programs and hostile sources in the compiled tier-1 languages, on DockerBackend.

Each session is what the platform runs for the catalogue's runtime (``tests.sandbox.languages``)
under small per-case limits. A run-time attack is case 0 of a two-case session: its outcome is
contained exactly as the limit it hits says, the case comes back within its wall time plus a
slack, and case 1 shows the session survived (or looks for what case 0 left behind). A compile
attack ends its compile step within the compile limits, as the attack says, and no case runs.
Nothing is left on the engine afterwards.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from executions.judging import compile_status, run_verdict
from executions.models import CompileStatus, Verdict
from executions.services.running import COMPILE_OUTPUT_BYTES
from sandbox.contract import RunResult, Session
from sandbox.docker import DockerBackend

from .conformance import SLACK_S
from .language_attacks import (
    COMPILE_ATTACKS,
    HOST_CANARY,
    LOOK_REPORT,
    PROGRAMS,
    WRITE_REPORT,
    CompileAttack,
)
from .languages import catalogue_session
from .sessions import Recorder

pytestmark = pytest.mark.real_service

WALL_MS = 2000
OUTPUT_KB = 8
# The JVM needs more room than the others to start at all.
MEMORY_MB = {"java-17": 256}
DEFAULT_MEMORY_MB = 128
# Attacks on the compiler get a tighter compile step than the catalogue's (15 s, 512 MiB).
COMPILE_LIMITS = {"compile_time_limit_ms": 10_000, "compile_memory_mb": 256}


class TimedRecorder(Recorder):
    """A recorder that also notes how long, seen from the host, each step took to report."""

    def __init__(self) -> None:
        super().__init__()
        self.last_report = time.monotonic()
        self.compile_took = 0.0
        self.case_took: dict[int, float] = {}

    def _took(self) -> float:
        now = time.monotonic()
        took, self.last_report = now - self.last_report, now
        return took

    def compile_ended(self, result: RunResult) -> bool:
        self.compile_took = self._took()
        return super().compile_ended(result)

    def case_ended(self, index: int, result: RunResult) -> bool:
        self.case_took[index] = self._took()
        return super().case_ended(index, result)


@pytest.fixture
def backend(require_docker: dict[str, Any], slot_dir: str, tier_one_images: None) -> DockerBackend:
    return DockerBackend(**require_docker, lock_dir=slot_dir)


def run_attack_session(
    backend: DockerBackend, session: Session, sandbox_gone: Callable[[str], bool]
) -> TimedRecorder:
    """Run ``session``; check that it raised no infrastructure error, that each step came back
    within its wall time plus a slack, and that nothing of it is left on the engine."""
    recorder = TimedRecorder()
    backend.run_session(session, recorder)
    assert sandbox_gone(session.handle), f"sandbox {session.handle} left behind"
    assert recorder.compiled is not None, recorder.told
    assert recorder.compiled.error_kind is None, recorder.compiled.error_message
    assert session.compile is not None
    assert recorder.compile_took < session.compile.limits.wall_time_s + SLACK_S, (
        f"the compile step took {recorder.compile_took:.1f} s"
    )
    for index, result in recorder.results.items():
        assert result.error_kind is None, (index, result.error_message)
        took = recorder.case_took[index]
        assert took < session.limits.wall_time_s + SLACK_S, f"case {index} took {took:.1f} s"
    return recorder


# --- run-time attacks, in every compiled tier-1 language --------------------------------------


def _fork_bomb(result: RunResult, limits: Mapping[str, int]) -> None:
    assert result.timed_out and not result.oom_killed, result
    first_failure = re.search(rb"^failed after (\d+)$", result.stdout, re.MULTILINE)
    assert first_failure, result.stdout[-2000:]
    assert int(first_failure[1]) < limits["pids"], "more processes than the pids limit"


def _memory_bomb(result: RunResult, limits: Mapping[str, int]) -> None:
    touched = [int(line) for line in result.stdout.split()]
    assert touched, result.stderr[-2000:]
    assert max(touched) <= limits["memory_mb"], (
        f"touched {max(touched)} MiB under a memory limit of {limits['memory_mb']} MiB"
    )
    assert result.oom_killed and not result.timed_out, result


def _endless_output(result: RunResult, limits: Mapping[str, int]) -> None:
    assert result.stdout_truncated and not result.timed_out, result
    assert len(result.stdout) == OUTPUT_KB * 1024
    assert set(result.stdout) == set(b"y\n"), result.stdout[:200]


def _busy_loop(result: RunResult, limits: Mapping[str, int]) -> None:
    assert result.timed_out and not result.oom_killed, result
    assert (result.exit_code, result.signal) == (None, None), "not stopped at the deadline"
    assert result.wall_time_ms is not None and result.wall_time_ms >= WALL_MS
    # Spinning, not sleeping: it used the CPU for a good part of its wall time.
    assert result.cpu_time_ms is not None and result.cpu_time_ms >= WALL_MS // 4, result


def _file_writes(result: RunResult, limits: Mapping[str, int]) -> None:
    assert result.exit_code == 0, result.stderr[-2000:]
    assert result.stdout == WRITE_REPORT


@dataclass(frozen=True)
class RunTimeAttack:
    """Case 0 runs the ``attack`` mode and must pass ``check`` (given the case's memory and
    pids limits) with ``verdict``; case 1 runs ``follow_up`` and must print ``survivor_says``."""

    name: str
    attack: str
    check: Callable[[RunResult, Mapping[str, int]], None]
    verdict: Verdict
    follow_up: str = "hello"
    survivor_says: bytes = b"alive\n"


RUN_TIME_ATTACKS = [
    RunTimeAttack("fork_bomb", "fork", _fork_bomb, Verdict.TIME_LIMIT),
    RunTimeAttack("memory_bomb", "memory", _memory_bomb, Verdict.MEMORY_LIMIT),
    RunTimeAttack("endless_output", "output", _endless_output, Verdict.OUTPUT_LIMIT),
    RunTimeAttack("busy_loop", "busy", _busy_loop, Verdict.TIME_LIMIT),
    # Case 1 looks for what case 0 wrote.
    RunTimeAttack("file_writes", "write", _file_writes, Verdict.ACCEPTED, "look", LOOK_REPORT),
]


@pytest.mark.parametrize("attack", RUN_TIME_ATTACKS, ids=lambda attack: attack.name)
@pytest.mark.parametrize("entry", sorted(PROGRAMS))
def test_run_time_attack_is_contained(
    entry: str, attack: RunTimeAttack, backend: DockerBackend, sandbox_gone: Callable[[str], bool]
) -> None:
    memory_mb = MEMORY_MB.get(entry, DEFAULT_MEMORY_MB)
    session = catalogue_session(
        entry,
        PROGRAMS[entry],
        [f"{attack.attack}\n".encode(), f"{attack.follow_up}\n".encode()],
        time_limit_ms=WALL_MS,
        memory_mb=memory_mb,
        output_kb=OUTPUT_KB,
    )
    recorder = run_attack_session(backend, session, sandbox_gone)
    assert recorder.compiled is not None
    assert compile_status(recorder.compiled) == CompileStatus.COMPILED, recorder.compiled.stderr
    assert sorted(recorder.results) == [0, 1], recorder.told
    attacked, survivor = recorder.results[0], recorder.results[1]
    attack.check(attacked, {"memory_mb": memory_mb, "pids": session.limits.pids})
    assert run_verdict(attacked) == attack.verdict
    assert (survivor.exit_code, survivor.stdout) == (0, attack.survivor_says), survivor


# --- compile-time attacks: the compiler is untrusted too ----------------------------------------

CANARY_TEXT = "host-canary-6f0d2c8e: the compiler must never read this"


@pytest.fixture
def host_canary(tmp_path: Path) -> Path:
    """A file on the host, readable by everyone, at a path no image has."""
    canary = tmp_path / "canary.h"
    canary.write_text(f'const char *leaked = "{CANARY_TEXT}";\n')
    canary.chmod(0o644)
    return canary


@pytest.mark.parametrize("attack", COMPILE_ATTACKS, ids=lambda attack: attack.name)
def test_compile_time_attack_is_contained(
    attack: CompileAttack,
    backend: DockerBackend,
    sandbox_gone: Callable[[str], bool],
    host_canary: Path,
) -> None:
    session = catalogue_session(
        attack.entry,
        attack.source.replace(HOST_CANARY, str(host_canary)),
        [b"hello\n"],
        time_limit_ms=WALL_MS,
        memory_mb=DEFAULT_MEMORY_MB,
        **COMPILE_LIMITS,
    )
    recorder = run_attack_session(backend, session, sandbox_gone)
    result = recorder.compiled
    assert result is not None and session.compile is not None
    # A failed compile runs no case.
    assert recorder.told == [("starting", 0), ("compiled", 0)]
    assert recorder.results == {}
    assert compile_status(result) == attack.ending, result
    output = result.stdout + result.stderr
    assert attack.says in output, output[-2000:]
    assert CANARY_TEXT.encode() not in output
    if attack.ending == CompileStatus.MEMORY_LIMIT:
        assert result.oom_killed and not result.timed_out
    elif attack.ending == CompileStatus.TIME_LIMIT:
        assert result.timed_out and not result.oom_killed
        assert result.wall_time_ms is not None
        assert result.wall_time_ms >= session.compile.limits.wall_time_ms
    elif attack.ending == CompileStatus.OUTPUT_LIMIT:
        assert result.stderr_truncated and not (result.timed_out or result.oom_killed)
        assert len(result.stderr) == COMPILE_OUTPUT_BYTES
    else:
        assert result.exit_code == 1, result
        assert not (result.timed_out or result.oom_killed or result.output_limit_exceeded)
