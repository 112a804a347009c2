"""The JSON shapes between the remote backend and the execution service (``sandbox.wire``):
what survives the trip, what does not travel on purpose, and every malformed input refused."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from typing import Any

import pytest

from sandbox import wire
from sandbox.contract import CompileStep, ErrorKind, RunResult, Session
from sandbox.policy import Limits, SandboxPolicy

# Bytes that are not text: a NUL, a lone continuation byte, an overlong encoding, 0xff.
BINARY = b"\x00\x80\xc0\xaf\xff\xfe text \x00"
LIMITS = Limits(
    wall_time_ms=1234,
    memory_mb=96,
    output_bytes=4096,
    cpus=1.5,
    pids=33,
    scratch_mb=7,
    open_files=45,
    file_size_mb=3,
)
BAD_LIMITS = [0, -1, -0.5, "1000", None, True, [1000], {"ms": 1}, math.nan, math.inf, -math.inf]


def through_json(data: Any) -> Any:
    """What the other side decodes: the bytes ``dumps`` sends, parsed as JSON."""
    return json.loads(wire.dumps(data))


# -- sessions

COMPILE_LIMITS = Limits(wall_time_ms=9000, memory_mb=256, output_bytes=2048, cpus=2.0, pids=50)


def make_session(**changes: Any) -> Session:
    fields: dict[str, Any] = {
        "execution_id": 42,
        "handle": "evalplatform-42-abc123",
        "image": "registry.example/gcc:12",
        "command": ("./main", "--flag"),
        "files": {"main.c": b"int main(){}\n", "data.bin": BINARY, "dir/empty": b""},
        "policy": SandboxPolicy(limits=LIMITS, network=True),
        "stdins": [b"first", b"", BINARY],
        "labels": {"evalplatform.evaluation": "7", "note": "caf\u00e9"},
        "compile": CompileStep(command=("gcc", "-o", "main", "main.c"), limits=COMPILE_LIMITS),
    }
    fields.update(changes)
    return Session(**fields)


def session_body(**changes: Any) -> dict[str, Any]:
    body = through_json(wire.session_to_json(make_session()))
    body.update(changes)
    return body


def refusal(body: Any) -> str:
    with pytest.raises(wire.WireError) as refused:
        wire.session_from_json("s", body)
    return str(refused.value)


def test_a_session_survives_the_round_trip_with_every_field() -> None:
    session = make_session()
    back = wire.session_from_json(session.handle, through_json(wire.session_to_json(session)))
    assert back == session
    assert back.stdins == [b"first", b"", BINARY]
    assert back.compile == CompileStep(("gcc", "-o", "main", "main.c"), COMPILE_LIMITS)
    assert back.policy.network is True


def test_a_session_without_a_compile_step_sends_null() -> None:
    session = make_session(compile=None)
    sent = through_json(wire.session_to_json(session))
    assert sent["compile"] is None
    assert wire.session_from_json(session.handle, sent) == session


def test_every_limit_of_the_session_and_of_its_compile_step_travels() -> None:
    values = {name: 1000 + index for index, name in enumerate(wire.LIMIT_FIELDS)}
    compile_values = {name: 2000 + index for index, name in enumerate(wire.LIMIT_FIELDS)}
    session = make_session(
        policy=SandboxPolicy(limits=Limits(**values)),
        compile=CompileStep(("cc",), Limits(**compile_values)),
    )
    sent = through_json(wire.session_to_json(session))
    assert (sent["limits"], sent["compile"]["limits"]) == (values, compile_values)
    back = wire.session_from_json("s", sent)
    assert dataclasses.asdict(back.limits) == values
    assert back.compile is not None and dataclasses.asdict(back.compile.limits) == compile_values


def test_each_stdin_travels_as_base64_in_order() -> None:
    sent = wire.session_to_json(make_session())
    assert sent["stdins"] == ["Zmlyc3Q=", "", base64.b64encode(BINARY).decode()]
    assert sent["files"]["data.bin"] == base64.b64encode(BINARY).decode()


def test_the_handle_is_the_session_id_not_a_field_of_the_body() -> None:
    sent = through_json(wire.session_to_json(make_session()))
    assert "handle" not in sent
    assert wire.session_from_json("other-id", sent).handle == "other-id"


def test_only_limits_and_network_of_the_policy_travel() -> None:
    """The service applies its own hardening: a caller cannot weaken it through the wire."""
    weak = SandboxPolicy(
        limits=LIMITS,
        network=False,
        user=(0, 0),
        read_only_root=False,
        drop_all_capabilities=False,
        no_new_privileges=False,
        init_process=False,
        runtime_class="runc-unsafe",
        code_dir="/",
        scratch_dir="/etc",
        environment={"LD_PRELOAD": "/tmp/x.so"},
    )
    sent = through_json(wire.session_to_json(make_session(policy=weak)))
    assert set(sent) == {
        "execution_id",
        "image",
        "command",
        "files",
        "compile",
        "limits",
        "network",
        "labels",
        "stdins",
    }
    # Fields the sender added anyway are ignored, not applied.
    sent.update({"user": [0, 0], "read_only_root": False, "runtime_class": "runc-unsafe"})
    assert wire.session_from_json("s", sent).policy == SandboxPolicy(limits=LIMITS)


def test_a_sessions_optional_fields_have_safe_defaults() -> None:
    body = session_body()
    for name in ("network", "labels", "execution_id", "compile"):
        del body[name]
    session = wire.session_from_json("s", body)
    assert session.policy.network is False
    assert session.labels == {}
    assert session.execution_id == 0
    assert session.compile is None


@pytest.mark.parametrize("where", ["limits", "compile.limits"])
def test_limits_left_out_take_the_policy_defaults(where: str) -> None:
    body = with_limits(where, {"wall_time_ms": 1000, "memory_mb": 64, "output_bytes": 10})
    session = wire.session_from_json("s", body)
    limits = session.limits if where == "limits" else session.compile and session.compile.limits
    assert limits == Limits(wall_time_ms=1000, memory_mb=64, output_bytes=10)


@pytest.mark.parametrize("body", [[], "session", 1, None])
def test_a_session_body_that_is_not_an_object_is_refused(body: Any) -> None:
    assert refusal(body) == "the body must be a JSON object"


@pytest.mark.parametrize("name", ["limits", "command", "files", "image", "stdins"])
def test_a_missing_field_of_a_session_is_named(name: str) -> None:
    body = session_body()
    del body[name]
    assert refusal(body) == f"missing field {name!r}"


@pytest.mark.parametrize("name", ["command", "limits"])
def test_a_missing_field_of_the_compile_step_is_named(name: str) -> None:
    body = session_body()
    del body["compile"][name]
    assert refusal(body) == f"missing field 'compile.{name}'"


@pytest.mark.parametrize("where", ["limits", "compile.limits"])
@pytest.mark.parametrize("name", ["wall_time_ms", "memory_mb", "output_bytes"])
def test_a_missing_required_limit_is_named_with_its_place(where: str, name: str) -> None:
    limits = {"wall_time_ms": 1000, "memory_mb": 64, "output_bytes": 10}
    del limits[name]
    assert refusal(with_limits(where, limits)) == f"missing field '{where}.{name}'"


def with_limits(where: str, limits: Any) -> dict[str, Any]:
    """A valid session body whose ``limits`` or ``compile.limits`` are ``limits``."""
    body = session_body()
    if where == "limits":
        body["limits"] = limits
    else:
        body["compile"]["limits"] = limits
    return body


@pytest.mark.parametrize("where", ["limits", "compile.limits"])
@pytest.mark.parametrize(
    "limits",
    [
        [1000, 64, 10],
        "wall_time_ms=1000",
        {"wall_time_ms": 1000, "memory_mb": 64, "output_bytes": 10, "privileged": 1},
        {"wall_time_ms": 1000, "memory_mb": 64, "output_bytes": 10, "wall_time_s": 1},
    ],
)
def test_session_limits_must_be_an_object_of_known_fields(where: str, limits: Any) -> None:
    assert refusal(with_limits(where, limits)).startswith(
        f"{where} must be an object with keys among wall_time_ms, "
    )


@pytest.mark.parametrize("where", ["limits", "compile.limits"])
@pytest.mark.parametrize("value", BAD_LIMITS)
@pytest.mark.parametrize("name", wire.LIMIT_FIELDS)
def test_each_session_limit_must_be_a_positive_finite_number(
    where: str, name: str, value: Any
) -> None:
    limits = {"wall_time_ms": 1000, "memory_mb": 64, "output_bytes": 10, name: value}
    kind = "number" if name == "cpus" else "whole number"
    assert refusal(with_limits(where, limits)) == f"{where}.{name} must be a positive {kind}"


@pytest.mark.parametrize("where", ["limits", "compile.limits"])
@pytest.mark.parametrize("name", sorted(set(wire.LIMIT_FIELDS) - {"cpus"}))
def test_a_whole_number_session_limit_refuses_a_fraction(where: str, name: str) -> None:
    limits = {"wall_time_ms": 1000, "memory_mb": 64, "output_bytes": 10, name: 1.5}
    assert refusal(with_limits(where, limits)) == f"{where}.{name} must be a positive whole number"


@pytest.mark.parametrize(
    ("where", "spelt"),
    [("limits", b'"wall_time_ms":1234'), ("compile.limits", b'"wall_time_ms":9000')],
)
def test_a_limit_of_nan_in_the_json_text_is_refused(where: str, spelt: bytes) -> None:
    # json.loads takes the token NaN, and NaN compares false with every cap.
    text = wire.dumps(wire.session_to_json(make_session()))
    assert text.count(spelt) == 1
    body = json.loads(text.replace(spelt, b'"wall_time_ms":NaN'))
    assert refusal(body) == f"{where}.wall_time_ms must be a positive whole number"


@pytest.mark.parametrize("compile_step", ["gcc main.c", ["gcc"], 0, False])
def test_the_compile_step_must_be_an_object_or_null(compile_step: Any) -> None:
    assert refusal(session_body(compile=compile_step)) == "compile must be an object or null"


@pytest.mark.parametrize("command", [[], "gcc main.c", ["gcc", 1], None])
def test_the_compile_command_must_be_a_non_empty_list_of_strings(command: Any) -> None:
    body = session_body()
    body["compile"]["command"] = command
    assert refusal(body) == "compile.command must be a non-empty list of strings"


@pytest.mark.parametrize("stdins", [[], "input", {"0": ""}, None])
def test_stdins_must_be_a_non_empty_list(stdins: Any) -> None:
    assert refusal(session_body(stdins=stdins)) == "stdins must be a non-empty list"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "must be a base64 string"),
        (123, "must be a base64 string"),
        (["aGk="], "must be a base64 string"),
        ("aGk", "is not valid base64"),  # padding missing
        ("aG k=", "is not valid base64"),  # a space inside
        ("aGk=\n", "is not valid base64"),  # a trailing newline
        ("aGk_", "is not valid base64"),  # URL-safe alphabet
        ("\u00e9\u00e9\u00e9\u00e9", "is not valid base64"),
    ],
)
def test_file_contents_and_each_stdin_must_be_strict_base64(value: Any, reason: str) -> None:
    assert refusal(session_body(files={"main.c": value})) == f"files['main.c'] {reason}"
    assert refusal(session_body(stdins=["", "aGk=", value])) == f"stdins[2] {reason}"


@pytest.mark.parametrize("network", ["false", 0, 1, None, [True]])
def test_network_must_be_a_boolean(network: Any) -> None:
    assert refusal(session_body(network=network)) == "network must be true or false"


@pytest.mark.parametrize("command", [[], "python3 main.py", ["python3", 1], [None], None])
def test_the_command_must_be_a_non_empty_list_of_strings(command: Any) -> None:
    assert refusal(session_body(command=command)) == "command must be a non-empty list of strings"


@pytest.mark.parametrize("image", ["", None, 3, ["python"]])
def test_the_image_must_be_a_non_empty_string(image: Any) -> None:
    assert refusal(session_body(image=image)) == "image must be a non-empty string"


@pytest.mark.parametrize("files", [[], "main.py", [["main.py", ""]]])
def test_files_must_be_an_object(files: Any) -> None:
    assert refusal(session_body(files=files)) == "files must be an object"


@pytest.mark.parametrize("labels", [["a"], {"a": 1}, {"a": None}, "a=b"])
def test_labels_must_map_strings_to_strings(labels: Any) -> None:
    assert refusal(session_body(labels=labels)) == "labels must map strings to strings"


@pytest.mark.parametrize("execution_id", ["42", 4.2, True, None])
def test_the_execution_id_must_be_an_integer(execution_id: Any) -> None:
    assert refusal(session_body(execution_id=execution_id)) == "execution_id must be an integer"


def test_every_refusal_is_a_value_error() -> None:
    """Callers that catch ``ValueError`` (as the service does for bad JSON) catch these too."""
    assert issubclass(wire.WireError, ValueError)


# -- the progress of a session


def test_a_sessions_steps_are_its_compile_step_then_each_case() -> None:
    assert wire.steps_of(make_session()) == [
        wire.Step(wire.COMPILE),
        wire.Step(wire.CASE, 0),
        wire.Step(wire.CASE, 1),
        wire.Step(wire.CASE, 2),
    ]
    assert wire.steps_of(make_session(compile=None, stdins=[b""])) == [wire.Step(wire.CASE, 0)]
    assert [str(step) for step in wire.steps_of(make_session(stdins=[b""]))] == [
        "the compile step",
        "case 0",
    ]


@pytest.mark.parametrize(
    ("step", "result", "ends"),
    [
        (wire.Step(wire.COMPILE), RunResult(exit_code=0), False),
        (wire.Step(wire.COMPILE), RunResult(exit_code=1), True),
        (wire.Step(wire.COMPILE), RunResult(exit_code=0, timed_out=True), True),
        (wire.Step(wire.COMPILE), RunResult.failure(ErrorKind.CANCELLED, "x"), True),
        (wire.Step(wire.CASE, 0), RunResult(exit_code=1, timed_out=True), False),
        (wire.Step(wire.CASE, 3), RunResult.failure(ErrorKind.UNAVAILABLE, "x"), True),
    ],
)
def test_a_failure_or_a_failed_compile_step_ends_the_session(
    step: wire.Step, result: RunResult, ends: bool
) -> None:
    assert wire.ends_session(step, result) is ends


def test_progress_survives_the_round_trip_with_every_step() -> None:
    results = [
        (wire.Step(wire.COMPILE), full_result(error_kind=None)),
        (wire.Step(wire.CASE, 0), RunResult(exit_code=0, stdout=BINARY)),
        (wire.Step(wire.CASE, 1), RunResult.failure(ErrorKind.CANCELLED, "stopped")),
    ]
    sent = through_json(wire.progress_to_json("s-1", "done", results))
    assert sent["session_id"] == "s-1"
    assert [{k: v for k, v in entry.items() if k != "result"} for entry in sent["results"]] == [
        {"step": "compile"},
        {"step": "case", "index": 0},
        {"step": "case", "index": 1},
    ]
    assert wire.progress_from_json(sent) == wire.Progress("done", results)


@pytest.mark.parametrize("state", wire.STATES)
def test_every_state_survives_the_round_trip(state: str) -> None:
    sent = through_json(wire.progress_to_json("s", state, []))
    assert wire.progress_from_json(sent) == wire.Progress(state, [])


def progress_refusal(data: Any) -> str:
    with pytest.raises(wire.WireError) as refused:
        wire.progress_from_json(data)
    return str(refused.value)


def progress_with(entry: Any) -> dict[str, Any]:
    ok = {"step": "case", "index": 0, "result": {"exit_code": 0}}
    return {"session_id": "s", "state": "running", "results": [ok, entry]}


@pytest.mark.parametrize("data", [[], "done", None])
def test_progress_that_is_not_an_object_is_refused(data: Any) -> None:
    assert progress_refusal(data) == "the progress must be a JSON object"


@pytest.mark.parametrize("state", ["finished", "DONE", None, 1])
def test_an_unknown_state_is_refused(state: Any) -> None:
    data = {"state": state, "results": []}
    assert progress_refusal(data) == "state must be one of queued, running, done"


@pytest.mark.parametrize("results", [None, {}, "[]"])
def test_results_must_be_a_list(results: Any) -> None:
    assert progress_refusal({"state": "done", "results": results}) == "results must be a list"


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("case", "results[1] must be an object"),
        ({"step": "run", "result": {}}, 'results[1].step must be "compile" or "case"'),
        ({"result": {}}, 'results[1].step must be "compile" or "case"'),
        ({"step": "case", "result": {}}, "results[1].index must be a whole number of at least 0"),
        (
            {"step": "case", "index": -1, "result": {}},
            "results[1].index must be a whole number of at least 0",
        ),
        (
            {"step": "case", "index": True, "result": {}},
            "results[1].index must be a whole number of at least 0",
        ),
        (
            {"step": "case", "index": 1.0, "result": {}},
            "results[1].index must be a whole number of at least 0",
        ),
        ({"step": "compile"}, "results[1].result: the result must be a JSON object"),
        (
            {"step": "case", "index": 1, "result": {"exit_code": "0"}},
            "results[1].result: bad result: exit_code must be a whole number or null, got '0'",
        ),
        (
            {"step": "case", "index": 1, "result": {"stdout": "aGk"}},
            "results[1].result: stdout is not valid base64",
        ),
    ],
)
def test_a_bad_entry_of_the_progress_is_named(entry: Any, error: str) -> None:
    assert progress_refusal(progress_with(entry)) == error


# -- session ids


@pytest.mark.parametrize(
    "session_id",
    ["a", "7", "exec-42.try_1", "A" * 128, "a-_.", "Z" + "9" * 127],
)
def test_session_ids_the_pattern_accepts(session_id: str) -> None:
    assert wire.SESSION_ID.fullmatch(session_id)


@pytest.mark.parametrize(
    "session_id",
    [
        "",
        "a" * 129,  # Docker names the sandbox after it; keep it short
        "-a",  # would read as an option
        ".a",
        "..",
        "_a",
        "a/b",
        "a b",
        "a\n",
        "a%2Fb",
        "caf\u00e9",
        "\u0661",  # an Arabic-Indic digit: \d would take it, [0-9] does not
    ],
)
def test_session_ids_the_pattern_refuses(session_id: str) -> None:
    assert wire.SESSION_ID.fullmatch(session_id) is None


# -- results


def full_result(**changes: Any) -> RunResult:
    fields: dict[str, Any] = {
        "exit_code": 137,
        "signal": 9,
        "stdout": BINARY,
        "stderr": b"Traceback\xff\x00",
        "stdout_truncated": True,
        "stderr_truncated": True,
        "timed_out": True,
        "oom_killed": True,
        "wall_time_ms": 2001,
        "cpu_time_ms": 1999,
        "peak_memory_bytes": 67_108_864,
        "handle": "exec-42",
        "error_kind": ErrorKind.BACKEND_ERROR,
        "error_message": "the engine went away \u2014 twice",
    }
    fields.update(changes)
    return RunResult(**fields)


def test_a_result_survives_the_round_trip_with_every_field() -> None:
    result = full_result()
    assert wire.result_from_json(through_json(wire.result_to_json(result))) == result


@pytest.mark.parametrize("kind", [*ErrorKind, None])
def test_every_error_kind_survives_the_round_trip(kind: ErrorKind | None) -> None:
    back = wire.result_from_json(through_json(wire.result_to_json(full_result(error_kind=kind))))
    assert back.error_kind is kind


def test_a_result_of_nulls_and_falses_survives_the_round_trip() -> None:
    result = RunResult()
    sent = through_json(wire.result_to_json(result))
    assert sent["exit_code"] is None and sent["error_kind"] is None
    assert wire.result_from_json(sent) == result


def test_output_travels_as_base64() -> None:
    sent = wire.result_to_json(full_result())
    assert sent["stdout"] == base64.b64encode(BINARY).decode()
    assert sent["error_kind"] == "backend_error"


def test_fields_a_result_leaves_out_take_their_defaults() -> None:
    assert wire.result_from_json({"exit_code": 3}) == RunResult(exit_code=3)


def test_fields_a_newer_service_adds_are_ignored() -> None:
    sent = through_json(wire.result_to_json(full_result()))
    sent["energy_used_mj"] = 12
    assert wire.result_from_json(sent) == full_result()


@pytest.mark.parametrize("data", [[], "done", None, 0])
def test_a_result_that_is_not_an_object_is_refused(data: Any) -> None:
    with pytest.raises(wire.WireError, match="the result must be a JSON object"):
        wire.result_from_json(data)


@pytest.mark.parametrize("value", ["0", 0.0, 1.5, True, False, [0], {}])
@pytest.mark.parametrize("name", ["exit_code", "signal", "wall_time_ms", "peak_memory_bytes"])
def test_whole_number_fields_refuse_anything_else(name: str, value: Any) -> None:
    with pytest.raises(wire.WireError) as refused:
        wire.result_from_json({name: value})
    assert str(refused.value) == (
        f"bad result: {name} must be a whole number or null, got {value!r}"
    )


@pytest.mark.parametrize("value", [1, 0, "true", "false", None, []])
@pytest.mark.parametrize(
    "name", ["stdout_truncated", "stderr_truncated", "timed_out", "oom_killed"]
)
def test_flags_refuse_anything_but_true_or_false(name: str, value: Any) -> None:
    with pytest.raises(wire.WireError) as refused:
        wire.result_from_json({name: value})
    assert str(refused.value) == f"bad result: {name} must be true or false"


@pytest.mark.parametrize("value", [1, None, ["x"], {"x": "y"}])
@pytest.mark.parametrize("name", ["handle", "error_message"])
def test_text_fields_refuse_anything_else(name: str, value: Any) -> None:
    with pytest.raises(wire.WireError) as refused:
        wire.result_from_json({name: value})
    assert str(refused.value) == f"bad result: {name} must be a string"


@pytest.mark.parametrize("kind", ["exploded", "BACKEND_ERROR", "Refused", 5, True, ["refused"]])
def test_an_unknown_error_kind_is_refused(kind: Any) -> None:
    with pytest.raises(wire.WireError, match="bad result: "):
        wire.result_from_json({"error_kind": kind})


@pytest.mark.parametrize("name", ["stdout", "stderr"])
@pytest.mark.parametrize("value", [None, 7, "aGk", "a b="])
def test_output_must_be_strict_base64(name: str, value: Any) -> None:
    with pytest.raises(wire.WireError, match=f"^{name} "):
        wire.result_from_json({name: value})


# -- digest and encoding


def test_the_digest_is_the_sha256_of_the_exact_bytes() -> None:
    # SHA-256 of the empty string, from FIPS 180-2's test vectors.
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert wire.request_digest(b"") == empty
    assert wire.request_digest(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert wire.request_digest(b'{"a":1}') != wire.request_digest(b'{"a": 1}'), (
        "the same JSON spelt differently is a different submission"
    )


def test_encoding_the_same_session_twice_gives_the_same_digest() -> None:
    """A retried PUT must be recognised as the same session: its bytes must not change."""
    first = wire.dumps(wire.session_to_json(make_session()))
    again = wire.dumps(wire.session_to_json(make_session()))
    assert wire.request_digest(first) == wire.request_digest(again)
    other = wire.dumps(wire.session_to_json(make_session(stdins=[b"other"])))
    assert wire.request_digest(first) != wire.request_digest(other)


def test_dumps_is_compact_ascii_json() -> None:
    data = {"a": [1, "caf\u00e9"], "b": {"c": None, "d": True}}
    assert wire.dumps(data) == b'{"a":[1,"caf\\u00e9"],"b":{"c":null,"d":true}}'
    assert json.loads(wire.dumps(data)) == data
