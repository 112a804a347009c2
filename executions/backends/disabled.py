"""A backend that runs nothing and says why: the safe default inside a container."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
)

ADVICE = (
    "Running untrusted code from inside a container would mean handing the platform a Docker "
    "socket, and whoever took over the platform would then control that engine: root on the "
    "host when the socket is the host's. An administrator turns execution on with the safest "
    "backend this machine offers: the security page names it and explains the trade-offs."
)


def refusal(reason: str) -> str:
    return f"Code execution is disabled on this deployment. {reason} {ADVICE}"


@dataclass(frozen=True)
class DisabledOptions:
    # Why execution is off here; the refusal repeats it.
    reason: str = "It was configured that way (EXECUTION_BACKEND=disabled)."


class DisabledBackend(ExecutionBackend):
    """Every run is refused with an explanation; nothing is ever executed.

    Options: ``DisabledOptions``."""

    name = "disabled"
    options_class = DisabledOptions
    options: DisabledOptions

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.message = refusal(self.options.reason)

    def _run(self, request: RunRequest) -> RunResult:
        return RunResult.failure(ErrorKind.REFUSED, self.message, handle=request.handle)

    def health(self) -> Health:
        return Health(ok=False, detail="Execution is disabled: no code runs on this deployment.")

    def describe(self) -> Isolation:
        return Isolation(facts={"runs": "nothing: each run is refused, saying why"})
