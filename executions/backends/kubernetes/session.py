"""A session's steps and its observer: which step awaits its result, and who is told."""

from __future__ import annotations

from executions.backends.kubernetes.manifests import Step, case_step, compile_step
from sandbox.contract import ErrorKind, RunResult, Session, SessionObserver, compiled


class SessionSteps:
    """The steps of a session in order (the compile step, then each case) and the one whose
    result is awaited. Each result goes to the observer once; ``over`` once it answered
    False, the last step ended, or a failure was reported (``fail``)."""

    def __init__(self, session: Session, observer: SessionObserver) -> None:
        self.session = session
        self.observer = observer
        first = compile_step(session)
        cases = [case_step(session, index) for index in range(len(session.stdins))]
        self.steps: list[Step] = [first, *cases] if first is not None else cases
        self.position = 0
        self.over = False

    @property
    def current(self) -> Step:
        return self.steps[self.position]

    @property
    def next_case(self) -> int:
        """The first case without a result."""
        step = self.current
        return step.index if step.kind == "C" else 0

    def fail(self, kind: ErrorKind, message: str) -> None:
        """The current step failed in the infrastructure: say so, once, and end."""
        if self.over:
            return
        self.over = True
        self.report(self.current, RunResult.failure(kind, message, handle=self.session.handle))

    def ended(self, result: RunResult) -> None:
        """The current step's result: tell the observer, then announce the next case."""
        step = self.current
        result.handle = self.session.handle
        go_on = self.report(step, result) and (step.kind != "K" or compiled(result))
        self.position += 1
        if not go_on or self.position == len(self.steps):
            self.over = True
            return
        following = self.current
        # Case 0 was announced before the sandbox existed.
        if following.index > 0 and not self.observer.case_starting(
            following.index, self.session.handle
        ):
            self.over = True

    def report(self, step: Step, result: RunResult) -> bool:
        if step.kind == "K":
            return self.observer.compile_ended(result)
        return self.observer.case_ended(step.index, result)
