"""The JSON shapes of sessions, their progress and results between the remote backend and
the execution service.

Bytes travel base64-encoded. Only the limits and the network flag of a policy travel: the
service applies its own hardening, never one chosen by the caller. A session's progress lists
the results of its steps (``steps_of``: the compile step if any, then each case) in the order
they ran; a step that ``ends_session`` is the last one reported.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from sandbox.contract import CompileStep, ErrorKind, RunResult, Session, compiled
from sandbox.policy import Limits, SandboxPolicy

SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(Limits))
# The limits that may be fractions (CPUs); every other limit is a whole number.
FRACTIONAL_LIMITS = frozenset(f.name for f in dataclasses.fields(Limits) if f.type == "float")
_REQUIRED_LIMITS = tuple(
    f.name for f in dataclasses.fields(Limits) if f.default is dataclasses.MISSING
)


class WireError(ValueError):
    """A session, its progress or a result in JSON that does not have the expected shape."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise WireError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise WireError(f"{what} is not valid base64") from exc


def session_to_json(session: Session) -> dict[str, Any]:
    return {
        "execution_id": session.execution_id,
        "image": session.image,
        "command": list(session.command),
        "files": {name: _b64(data) for name, data in session.files.items()},
        "compile": None
        if session.compile is None
        else {
            "command": list(session.compile.command),
            "limits": _limits_to_json(session.compile.limits),
        },
        "limits": _limits_to_json(session.limits),
        "network": session.policy.network,
        "labels": dict(session.labels),
        "stdins": [_b64(stdin) for stdin in session.stdins],
    }


def _limits_to_json(limits: Limits) -> dict[str, Any]:
    # An unset optional limit (cpu_time_ms) is left out.
    return {k: v for k, v in dataclasses.asdict(limits).items() if v is not None}


def session_from_json(session_id: str, data: Any) -> Session:
    """The ``Session`` named ``session_id`` from a decoded body; raise ``WireError`` naming
    the first bad field."""
    if not isinstance(data, dict):
        raise WireError("the body must be a JSON object")
    limits = _limits(_field(data, "limits"), "limits")
    return Session(
        execution_id=_execution_id(data.get("execution_id", 0)),
        handle=session_id,
        image=_image(_field(data, "image")),
        command=_command(_field(data, "command"), "command"),
        files=_files(_field(data, "files")),
        policy=SandboxPolicy(limits=limits, network=_flag(data.get("network", False))),
        stdins=_stdins(_field(data, "stdins")),
        labels=_labels(data.get("labels") or {}),
        compile=_compile_step(data.get("compile")),
    )


def _field(data: dict[str, Any], name: str, where: str = "") -> Any:
    try:
        return data[name]
    except KeyError:
        raise WireError(f"missing field {where + name!r}") from None


def _limits(data: Any, where: str) -> Limits:
    if not isinstance(data, dict) or set(data) - set(LIMIT_FIELDS):
        raise WireError(f"{where} must be an object with keys among {', '.join(LIMIT_FIELDS)}")
    for name in _REQUIRED_LIMITS:
        _field(data, name, f"{where}.")
    for key, value in data.items():
        _check_limit(f"{where}.{key}", key, value)
    return Limits(**data)


def _check_limit(where: str, key: str, value: Any) -> None:
    # NaN and infinities compare false with every cap, so they must never get this far; a
    # whole-number limit must be an integer, or it would reach the runner as a fraction.
    if key in FRACTIONAL_LIMITS:
        ok = isinstance(value, int | float) and math.isfinite(value)
    else:
        ok = isinstance(value, int)
    if isinstance(value, bool) or not ok or value <= 0:
        kind = "number" if key in FRACTIONAL_LIMITS else "whole number"
        raise WireError(f"{where} must be a positive {kind}")


def _command(value: Any, where: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and value and all(isinstance(c, str) for c in value)):
        raise WireError(f"{where} must be a non-empty list of strings")
    return tuple(value)


def _image(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise WireError("image must be a non-empty string")
    return value


def _files(value: Any) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise WireError("files must be an object")
    return {str(name): _unb64(body, f"files[{name!r}]") for name, body in value.items()}


def _stdins(value: Any) -> list[bytes]:
    if not isinstance(value, list) or not value:
        raise WireError("stdins must be a non-empty list")
    return [_unb64(stdin, f"stdins[{index}]") for index, stdin in enumerate(value)]


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise WireError("labels must map strings to strings")
    return value


def _execution_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError("execution_id must be an integer")
    return value


def _compile_step(value: Any) -> CompileStep | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise WireError("compile must be an object or null")
    return CompileStep(
        command=_command(_field(value, "command", "compile."), "compile.command"),
        limits=_limits(_field(value, "limits", "compile."), "compile.limits"),
    )


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise WireError("network must be true or false")
    return value


def request_digest(body: bytes) -> str:
    """Identifies a submission, so that a repeated PUT of the same session is recognised."""
    return hashlib.sha256(body).hexdigest()


def result_to_json(result: RunResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["stdout"] = _b64(result.stdout)
    data["stderr"] = _b64(result.stderr)
    data["error_kind"] = result.error_kind.value if result.error_kind else None
    return data


_RESULT_INTS = ("exit_code", "signal", "wall_time_ms", "cpu_time_ms", "peak_memory_bytes")
_RESULT_FLAGS = ("stdout_truncated", "stderr_truncated", "timed_out", "oom_killed")


def result_from_json(data: Any) -> RunResult:
    """The ``RunResult`` in ``data``; raises ``WireError`` for any field of the wrong type."""
    if not isinstance(data, dict):
        raise WireError("the result must be a JSON object")
    names = {f.name for f in dataclasses.fields(RunResult)}
    values = {key: value for key, value in data.items() if key in names}
    values["stdout"] = _unb64(values.get("stdout", ""), "stdout")
    values["stderr"] = _unb64(values.get("stderr", ""), "stderr")
    for name in _RESULT_INTS:
        value = values.get(name)
        if value is not None and type(value) is not int:
            raise WireError(f"bad result: {name} must be a whole number or null, got {value!r}")
    for name in _RESULT_FLAGS:
        if type(values.get(name, False)) is not bool:
            raise WireError(f"bad result: {name} must be true or false")
    for name in ("handle", "error_message"):
        if not isinstance(values.get(name, ""), str):
            raise WireError(f"bad result: {name} must be a string")
    kind = values.get("error_kind")
    try:
        values["error_kind"] = ErrorKind(kind) if kind else None
        return RunResult(**values)
    except (ValueError, TypeError) as exc:
        raise WireError(f"bad result: {exc}") from exc


COMPILE, CASE = "compile", "case"
STATES = ("queued", "running", "done")


@dataclasses.dataclass(frozen=True)
class Step:
    """A step of a session: its compile step, or the case at ``index``."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "the compile step" if self.kind == COMPILE else f"case {self.index}"


def steps_of(session: Session) -> list[Step]:
    """The steps of ``session`` in the order they run and are reported."""
    compile_step = [Step(COMPILE)] if session.compile is not None else []
    return compile_step + [Step(CASE, index) for index in range(len(session.stdins))]


def ends_session(step: Step, result: RunResult) -> bool:
    """Does ``result`` end its session before the last step: a failure of the infrastructure
    (as in every backend), or a compile step that did not succeed?"""
    return result.error_kind is not None or (step.kind == COMPILE and not compiled(result))


@dataclasses.dataclass(frozen=True)
class Progress:
    """A session on a service: its state, and the results of the steps asked for."""

    state: str
    results: list[tuple[Step, RunResult]]


def progress_to_json(
    session_id: str, state: str, results: Sequence[tuple[Step, RunResult]]
) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "state": state,
        "results": [
            _step_to_json(step) | {"result": result_to_json(result)} for step, result in results
        ],
    }


def _step_to_json(step: Step) -> dict[str, Any]:
    return {"step": COMPILE} if step.kind == COMPILE else {"step": CASE, "index": step.index}


def progress_from_json(data: Any) -> Progress:
    """The ``Progress`` in ``data``; raises ``WireError`` naming the first bad field."""
    if not isinstance(data, dict):
        raise WireError("the progress must be a JSON object")
    state = data.get("state")
    if state not in STATES:
        raise WireError(f"state must be one of {', '.join(STATES)}")
    entries = data.get("results")
    if not isinstance(entries, list):
        raise WireError("results must be a list")
    return Progress(state, [_step_result(n, entry) for n, entry in enumerate(entries)])


def _step_result(n: int, entry: Any) -> tuple[Step, RunResult]:
    where = f"results[{n}]"
    if not isinstance(entry, dict):
        raise WireError(f"{where} must be an object")
    kind = entry.get("step")
    if kind == COMPILE:
        step = Step(COMPILE)
    elif kind == CASE:
        index = entry.get("index")
        if type(index) is not int or index < 0:
            raise WireError(f"{where}.index must be a whole number of at least 0")
        step = Step(CASE, index)
    else:
        raise WireError(f'{where}.step must be "{COMPILE}" or "{CASE}"')
    try:
        return step, result_from_json(entry.get("result"))
    except WireError as exc:
        raise WireError(f"{where}.result: {exc}") from exc


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
