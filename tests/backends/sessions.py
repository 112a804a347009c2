"""Sessions for backend tests, and an observer that records what a backend tells it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from sandbox.contract import CompileStep, RunResult, Session
from sandbox.policy import Limits
from tests.sandbox.conformance import make_request


def make_session(
    image: str,
    source: str | bytes,
    stdins: Sequence[bytes],
    *,
    compile_command: Sequence[str] = (),
    command: Sequence[str] = (),
    **limits: Any,
) -> Session:
    """``source`` as ``main.py``, run once per stdin (under the conformance suite's default
    limits, changed by ``limits``); with a compile step when given its command, under the
    same limits."""
    request = make_request(image, source, **limits)
    session = replace(Session.of_request(request), stdins=list(stdins))
    if command:
        session = replace(session, command=tuple(command))
    if compile_command:
        session = replace(session, compile=CompileStep(tuple(compile_command), request.limits))
    return session


def limits_of(session: Session, **changes: Any) -> Limits:
    return replace(session.limits, **changes)


class Recorder:
    """A session observer that records what it is told, in order, as ``(event, index,
    result)``; it answers False at ``stop_after`` (a case index) and calls ``on_start`` with
    each index as a case starts."""

    def __init__(
        self,
        *,
        stop_after: int | None = None,
        on_start: Callable[[int], None] = lambda index: None,
    ) -> None:
        self.stop_after = stop_after
        self.on_start = on_start
        self.told: list[tuple[str, int, RunResult | None]] = []
        self.handles: set[str] = set()

    def case_starting(self, index: int, handle: str) -> bool:
        self.told.append(("starting", index, None))
        self.handles.add(handle)
        self.on_start(index)
        return True

    def compile_ended(self, result: RunResult) -> bool:
        self.told.append(("compiled", 0, result))
        return True

    def case_ended(self, index: int, result: RunResult) -> bool:
        self.told.append(("ended", index, result))
        return index != self.stop_after

    @property
    def events(self) -> list[tuple[str, int]]:
        return [(event, index) for event, index, _ in self.told]

    @property
    def compile_result(self) -> RunResult:
        (result,) = [result for event, _, result in self.told if event == "compiled"]
        assert result is not None
        return result

    @property
    def case_results(self) -> list[RunResult]:
        return [result for event, _, result in self.told if event == "ended" and result]
