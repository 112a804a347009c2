"""The catalogue's runtimes in the database: seeding them, and self-testing each one.

``runtimes_sync`` makes a ``Runtime`` row of each catalogue entry, or brings one up to date:
the catalogue owns what a runtime is (its image, commands, file name, language and editor
mode); the admin owns what it may use (limits, network, enabled), which are seeded once and
then left alone. A change of what the runtime is makes its self-test stale.

``runtime_self_test`` runs an entry's self-test program through the active backend, exactly
as an evaluation would run (compile step, then one case), and stores whether its output was
the known answer. A runtime that failed is not offered to evaluators (``Runtime.offered``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from executions.backends import get_backend
from executions.catalogue import (
    HELLO_STDOUT,
    IMAGES,
    SELF_TEST_STDIN,
    SELF_TEST_STDOUT,
    Entry,
)
from executions.models import Runtime, SelfTestStatus, display_text
from executions.services.running import compile_step, runtime_policy
from sandbox.contract import ErrorKind, RunResult, Session, compiled

# Self-test sessions are not executions; this id marks their sandboxes as such.
SELF_TEST_EXECUTION_ID = 0
_DETAIL_CHARS = 2000


@dataclass(frozen=True)
class SyncOutcome:
    runtime: Runtime
    action: str  # "created", "updated" or "unchanged"


def _identity(entry: Entry) -> dict[str, object]:
    """The fields the catalogue owns."""
    return {
        "display_name": entry.display_name,
        "language": entry.language,
        "version": entry.version,
        "image": IMAGES[entry.image].tag,
        "command": list(entry.command),
        "compile_command": list(entry.compile_command),
        "file_name": entry.file_name,
        "editor_mode": entry.editor_mode,
        "hello_world": entry.hello,
    }


def _seeded_limits(entry: Entry) -> dict[str, object]:
    """The fields the catalogue only seeds: the admin's to change afterwards."""
    limits = entry.limits
    return {
        "default_time_limit_ms": limits.time_limit_ms,
        "max_time_limit_ms": limits.max_time_limit_ms,
        "default_memory_mb": limits.memory_mb,
        "max_memory_mb": limits.max_memory_mb,
        "compile_time_limit_ms": limits.compile_time_limit_ms,
        "compile_memory_mb": limits.compile_memory_mb,
        "pids_limit": limits.pids,
        "open_files_limit": limits.open_files,
    }


# What a self-test proves depends on these: a change of any makes it stale.
_TESTED_FIELDS = ("image", "command", "compile_command", "file_name")


def runtimes_sync(entries: Iterable[Entry]) -> list[SyncOutcome]:
    """Create or update the ``Runtime`` of each entry; idempotent."""
    outcomes = []
    for entry in entries:
        with transaction.atomic():
            runtime = Runtime.objects.select_for_update().filter(name=entry.name).first()
            identity = _identity(entry)
            if runtime is None:
                runtime = Runtime.objects.create(
                    name=entry.name, **identity, **_seeded_limits(entry)
                )
                outcomes.append(SyncOutcome(runtime, "created"))
                continue
            changed = [name for name, value in identity.items() if getattr(runtime, name) != value]
            if not changed:
                outcomes.append(SyncOutcome(runtime, "unchanged"))
                continue
            for name in changed:
                setattr(runtime, name, identity[name])
            if set(changed) & set(_TESTED_FIELDS):
                runtime.self_test_status = SelfTestStatus.UNTESTED
                runtime.self_test_detail = ""
                runtime.self_tested_at = None
                changed += ["self_test_status", "self_test_detail", "self_tested_at"]
            runtime.save(update_fields=[*changed, "updated_at"])
            outcomes.append(SyncOutcome(runtime, "updated"))
    return outcomes


@dataclass(frozen=True)
class SelfTestOutcome:
    """One self-test: whether it passed, why not, and what it cost."""

    runtime: str
    passed: bool
    detail: str
    compile_ms: int | None
    run_ms: int | None
    seconds: float
    # False when nothing could be concluded (execution disabled, backend unreachable): the
    # runtime's stored status was left as it was.
    concluded: bool = True


class _Collector:
    """The observer of a self-test session: keeps the compile step's and the case's results."""

    def __init__(self) -> None:
        self.compile: RunResult | None = None
        self.case: RunResult | None = None

    def case_starting(self, index: int, handle: str) -> bool:
        return True

    def compile_ended(self, result: RunResult) -> bool:
        self.compile = result
        return compiled(result)

    def case_ended(self, index: int, result: RunResult) -> bool:
        self.case = result
        return False


# A step that ended so says nothing about the runtime, only about where it was run.
_INCONCLUSIVE = (ErrorKind.REFUSED, ErrorKind.UNAVAILABLE)


def run_program(runtime: Runtime, source: str, stdin: str) -> tuple[RunResult | None, RunResult]:
    """Run ``source`` as ``runtime``'s main file on the active backend, with the runtime's
    default limits: the compile step's result (None without one) and the case's."""
    policy = runtime_policy(
        runtime,
        time_limit_ms=runtime.default_time_limit_ms,
        memory_mb=runtime.default_memory_mb,
        output_kb=runtime.default_output_kb,
    )
    session = Session(
        execution_id=SELF_TEST_EXECUTION_ID,
        handle=f"evalplatform-selftest-{runtime.name}-{secrets.token_hex(3)}",
        image=runtime.image,
        command=list(runtime.command),
        files={runtime.file_name: source.encode()},
        policy=policy,
        stdins=[stdin.encode()],
        labels={"evalplatform.self-test": runtime.name},
        compile=compile_step(runtime, policy),
    )
    collector = _Collector()
    get_backend().run_session(session, collector)
    if collector.case is None:
        failed = collector.compile if collector.compile is not None else None
        return failed, RunResult.failure(
            ErrorKind.BACKEND_ERROR, "The program did not run: its compile step failed."
        )
    return collector.compile, collector.case


def _verdict(compile_result: RunResult | None, case: RunResult, expected: str) -> tuple[bool, str]:
    if compile_result is not None and not compiled(compile_result):
        said = display_text(compile_result.stdout + compile_result.stderr)
        why = compile_result.error_message or f"exit status {compile_result.exit_code}"
        return False, f"The compile step failed ({why}): {said}"
    if case.error_kind is not None:
        return False, f"The run failed ({case.error_kind}): {case.error_message}"
    output = display_text(case.stdout).strip()
    if case.exit_code != 0 or case.timed_out or case.oom_killed:
        state = "timed out" if case.timed_out else f"exit status {case.exit_code}"
        said = display_text(case.stderr).strip() or output
        return False, f"The program ended badly ({state}): {said[-1000:]}"
    if output != expected:
        return False, f"Expected {expected!r}, got {output[:200]!r}."
    return True, f"Printed {expected!r}."


def runtime_self_test(runtime: Runtime, entry: Entry) -> SelfTestOutcome:
    """Run ``entry``'s self-test on ``runtime`` and store the outcome on the runtime."""
    started = time.monotonic()
    if get_backend().name == "disabled":
        return SelfTestOutcome(
            runtime.name, False, "Not run: code execution is disabled here.", None, None, 0.0, False
        )
    compile_result, case = run_program(runtime, entry.self_test, SELF_TEST_STDIN)
    passed, detail = _verdict(compile_result, case, SELF_TEST_STDOUT)
    kinds = {case.error_kind, compile_result.error_kind if compile_result else None}
    if kinds & set(_INCONCLUSIVE):
        return SelfTestOutcome(
            runtime.name, False, detail, None, None, time.monotonic() - started, False
        )
    Runtime.objects.filter(pk=runtime.pk).update(
        self_test_status=SelfTestStatus.PASSED if passed else SelfTestStatus.FAILED,
        self_test_detail=detail[:_DETAIL_CHARS],
        self_tested_at=timezone.now(),
    )
    return SelfTestOutcome(
        runtime.name,
        passed,
        detail[:_DETAIL_CHARS],
        compile_result.wall_time_ms if compile_result else None,
        case.wall_time_ms,
        time.monotonic() - started,
    )


def runtime_hello(runtime: Runtime, entry: Entry) -> tuple[bool, float, str]:
    """Run ``entry``'s hello-world: whether it greeted, the seconds end to end, and why not."""
    started = time.monotonic()
    compile_result, case = run_program(runtime, entry.hello, "")
    passed, detail = _verdict(compile_result, case, HELLO_STDOUT)
    return passed, time.monotonic() - started, detail
