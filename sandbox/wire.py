"""The JSON shapes of runs and results between the remote backend and the service.

Bytes travel base64-encoded. Only the limits and the network flag of a policy travel: the
service applies its own hardening, never one chosen by the caller.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import re
from typing import Any

from sandbox.contract import ErrorKind, RunRequest, RunResult
from sandbox.policy import Limits, SandboxPolicy

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(Limits))
# The limits that may be fractions (CPUs); every other limit is a whole number.
FRACTIONAL_LIMITS = frozenset(f.name for f in dataclasses.fields(Limits) if f.type == "float")


class WireError(ValueError):
    """A run or result in JSON that does not have the expected shape."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise WireError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise WireError(f"{what} is not valid base64") from exc


def request_to_json(request: RunRequest) -> dict[str, Any]:
    return {
        "execution_id": request.execution_id,
        "image": request.image,
        "command": list(request.command),
        "files": {name: _b64(data) for name, data in request.files.items()},
        "stdin": _b64(request.stdin),
        # An unset optional limit (cpu_time_ms) is left out.
        "limits": {k: v for k, v in dataclasses.asdict(request.limits).items() if v is not None},
        "network": request.policy.network,
        "labels": dict(request.labels),
    }


def request_from_json(run_id: str, data: Any) -> RunRequest:
    """The ``RunRequest`` named ``run_id`` from a decoded body; raise ``WireError``."""
    if not isinstance(data, dict):
        raise WireError("the body must be a JSON object")
    try:
        limits_data = data["limits"]
        if not isinstance(limits_data, dict) or set(limits_data) - set(LIMIT_FIELDS):
            raise WireError(f"limits must be an object with keys among {', '.join(LIMIT_FIELDS)}")
        for key, value in limits_data.items():
            _check_limit(key, value)
        limits = Limits(**limits_data)
        command = data["command"]
        if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            raise WireError("command must be a non-empty list of strings")
        files = data["files"]
        if not isinstance(files, dict):
            raise WireError("files must be an object")
        image = data["image"]
        if not isinstance(image, str) or not image:
            raise WireError("image must be a non-empty string")
        labels = data.get("labels") or {}
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise WireError("labels must map strings to strings")
        execution_id = data.get("execution_id", 0)
        if not isinstance(execution_id, int) or isinstance(execution_id, bool):
            raise WireError("execution_id must be an integer")
        return RunRequest(
            execution_id=execution_id,
            handle=run_id,
            image=image,
            command=tuple(command),
            files={str(name): _unb64(body, f"files[{name!r}]") for name, body in files.items()},
            stdin=_unb64(data.get("stdin", ""), "stdin"),
            policy=SandboxPolicy(limits=limits, network=_flag(data.get("network", False))),
            labels=labels,
        )
    except KeyError as exc:
        raise WireError(f"missing field {exc.args[0]!r}") from exc
    except TypeError as exc:
        raise WireError(str(exc)) from exc


def _check_limit(key: str, value: Any) -> None:
    # NaN and infinities compare false with every cap, so they must never get this far; a
    # whole-number limit must be an integer, or it would reach the runner as a fraction.
    if key in FRACTIONAL_LIMITS:
        ok = isinstance(value, int | float) and math.isfinite(value)
    else:
        ok = isinstance(value, int)
    if isinstance(value, bool) or not ok or value <= 0:
        kind = "number" if key in FRACTIONAL_LIMITS else "whole number"
        raise WireError(f"limits.{key} must be a positive {kind}")


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise WireError("network must be true or false")
    return value


def request_digest(body: bytes) -> str:
    """Identifies a submission, so that a repeated PUT of the same run is recognised."""
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


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
