"""Sessions of one program for the remote backend's tests, and the session suite's observer
with a hook on each case's start."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from sandbox.contract import RunResult, Session
from tests.sandbox import sessions
from tests.sandbox.conformance import make_request


def one_program_session(
    image: str, source: str | bytes, stdins: Sequence[bytes], **limits: Any
) -> Session:
    """``source`` as ``main.py``, run once per stdin exactly as given, under the conformance
    suite's default limits changed by ``limits``."""
    return replace(Session.of_request(make_request(image, source, **limits)), stdins=list(stdins))


class Recorder(sessions.Recorder):
    """The session suite's observer, which also calls ``on_start`` with each case's index as
    it starts."""

    def __init__(
        self, stop_after: int | None = None, on_start: Callable[[int], None] = lambda index: None
    ) -> None:
        super().__init__(stop_after)
        self.on_start = on_start

    def case_starting(self, index: int, handle: str) -> bool:
        going_on = super().case_starting(index, handle)
        self.on_start(index)
        return going_on

    def failures(self) -> list[RunResult]:
        """The results of the infrastructure's failures it was told of, in order."""
        told = [self.compiled, *self.results.values()]
        return [result for result in told if result is not None and result.error_kind]
