"""Submissions through the services on the real Docker backend: per-case sandboxes, verdicts
and scores computed outside the sandbox, hostile output stored and shown safely."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from executions import services
from executions.models import Evaluation, Execution, Runtime
from tests.web.support import text_of

pytestmark = [pytest.mark.real_service, pytest.mark.django_db]


@pytest.fixture
def docker_runtime(
    runtime: Runtime,
    runtime_image: str,
    require_docker: dict[str, Any],
    slot_dir: str,
    settings: Any,
) -> Runtime:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "docker",
        "BACKEND_OPTIONS": {"docker": {**require_docker, "lock_dir": slot_dir}},
    }
    runtime.image = runtime_image
    runtime.save()
    return runtime


def run(
    user: Any, runtime: Runtime, source: str, *, status: str = "finished", **kwargs: Any
) -> Execution:
    evaluation: Evaluation = services.evaluation_submit(
        user=user, runtime=runtime, source=source, **kwargs
    )
    execution = evaluation.executions.get()
    assert execution.backend == "docker"
    services.execution_run(execution.pk)
    execution.refresh_from_db()
    assert execution.status == status, (execution.error_kind, execution.error_message)
    return execution


SOLUTION = """
import sys, time
n = int(sys.stdin.readline())
if n == 3:
    time.sleep(30)
if n == 4:
    raise SystemExit(2)
print(n * n)
"""


def test_test_cases_each_run_in_docker_and_are_judged_outside(
    user: Any, docker_runtime: Runtime
) -> None:
    execution = run(
        user,
        docker_runtime,
        SOLUTION,
        time_limit_ms=1500,
        test_cases=[
            {"stdin": "2\n", "expected_output": "4", "weight": 2},
            {"stdin": "5\n", "expected_output": "26"},
            {"stdin": "3\n", "expected_output": "9"},
            {"stdin": "4\n", "expected_output": "16"},
            {"stdin": "1.5e1\n", "expected_output": "x", "comparison": "numeric"},
        ],
    )
    verdicts = list(
        execution.results.order_by("test_case__position").values_list("verdict", flat=True)
    )
    assert verdicts == ["accepted", "wrong_answer", "time_limit", "runtime_error", "runtime_error"]
    assert execution.status == "finished" and execution.verdict == "wrong_answer"
    assert execution.score == Decimal("33.33")
    assert execution.results.get(test_case__position=3).exit_code == 2


def test_a_program_that_writes_state_cannot_pass_it_to_the_next_case(
    user: Any, docker_runtime: Runtime
) -> None:
    source = """
import os
marker = "/tmp/seen"
print("again" if os.path.exists(marker) else "first")
open(marker, "w").write("x")
"""
    execution = run(
        user,
        docker_runtime,
        source,
        test_cases=[{"expected_output": "first"}, {"expected_output": "first"}],
    )
    assert execution.verdict == "accepted" and execution.score == Decimal("100.00")


def test_hostile_output_is_stored_and_shown_escaped(
    user: Any, docker_runtime: Runtime, client: Client
) -> None:
    source = (
        "import sys\nsys.stdout.buffer.write(b'<script>alert(1)</script>\\x00\\xff\\xfe end')\n"
    )
    execution = run(user, docker_runtime, source)
    assert bytes(execution.stdout) == b"<script>alert(1)</script>\x00\xff\xfe end"
    client.force_login(user)
    page = client.get(execution.evaluation.get_absolute_url()).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\u2400\ufffd\ufffd end" in page
    assert "<script>alert(1)</script>" not in page


def test_a_missing_image_is_an_infrastructure_error(user: Any, docker_runtime: Runtime) -> None:
    docker_runtime.image = "evalplatform/does-not-exist:1"
    docker_runtime.save()
    execution = run(user, docker_runtime, "print(1)", status="error")
    assert execution.verdict == "internal_error"
    assert "build_runtime_image" in execution.error_message


def test_a_sandbox_left_by_an_earlier_database_does_not_block_a_run(
    user: Any, docker_runtime: Runtime, docker_api: Any
) -> None:
    """Execution ids start again with a new database (and repeat across rolled-back tests):
    a stopped sandbox named after an old execution with the same id must not collide."""
    evaluation = services.evaluation_submit(user=user, runtime=docker_runtime, source="print(7)")
    execution = evaluation.executions.get()
    leftover = docker_api.create_container(
        docker_runtime.image, command=["true"], name=f"evalplatform-{execution.pk}-0"
    )["Id"]
    try:
        services.execution_run(execution.pk)
        execution.refresh_from_db()
        assert execution.status == "finished", execution.error_message
        assert bytes(execution.stdout) == b"7\n"
    finally:
        docker_api.remove_container(leftover, force=True)


HUNT_FOR_EXPECTED_OUTPUT = """
import os, sys
marker = sys.stdin.readline().strip().replace("stdin-", "expected-").encode()
found = []
def look(path):
    try:
        with open(path, "rb") as f:
            if marker in f.read(1 << 22):
                found.append(path)
    except OSError:
        pass
for root in ("/sandbox", "/tmp", "/dev/shm", "/etc", "/proc/self", "/proc/1"):
    for directory, _, names in os.walk(root):
        for name in names:
            look(os.path.join(directory, name))
for value in os.environ.values():
    if marker.decode() in value:
        found.append("environ")
print("found" if found else "nowhere", found)
"""


def test_no_case_can_read_any_expected_output(user: Any, docker_runtime: Runtime) -> None:
    # Each case's stdin names a marker that only expected outputs hold, its own and the
    # others'. They never enter the sandbox: the session carries stdins alone.
    cases = [
        {"stdin": f"stdin-{index}-7d1f\n", "expected_output": f"expected-{j}-7d1f"}
        for index, j in ((0, 1), (1, 0), (2, 2))
    ]
    execution = run(user, docker_runtime, HUNT_FOR_EXPECTED_OUTPUT, test_cases=cases)
    outputs = list(
        execution.results.order_by("test_case__position").values_list("stdout", flat=True)
    )
    assert [bytes(output) for output in outputs] == [b"nowhere []\n"] * 3


# The compile step writes gen.py from main.py (after a syntax check), with a stamp drawn once;
# every case runs gen.py and prints the stamp on stderr, so one stamp means one compile.
COMPILE = """
import os, py_compile
py_compile.compile("main.py", doraise=True)
stamp = os.urandom(8).hex()
with open("main.py") as source, open("gen.py", "w") as generated:
    generated.write(f"STAMP = {stamp!r}\\n" + source.read())
print("compiled", stamp)
"""


@pytest.fixture
def compiling_docker_runtime(docker_runtime: Runtime) -> Runtime:
    docker_runtime.compile_command = ["python3", "-c", COMPILE]
    docker_runtime.command = ["python3", "gen.py"]
    docker_runtime.full_clean()
    docker_runtime.save()
    return docker_runtime


def test_a_compile_step_runs_once_in_docker_then_every_case_is_judged(
    user: Any, compiling_docker_runtime: Runtime
) -> None:
    source = "import sys\nprint(int(input()) * 2)\nprint(STAMP, file=sys.stderr)\n"
    execution = run(
        user,
        compiling_docker_runtime,
        source,
        test_cases=[
            {"stdin": "2\n", "expected_output": "4"},
            {"stdin": "5\n", "expected_output": "10"},
            {"stdin": "3\n", "expected_output": "7"},
        ],
    )
    assert (execution.verdict, execution.score) == ("wrong_answer", Decimal("66.67"))
    assert (execution.compile_status, execution.compile_exit_code) == ("compiled", 0)
    compile_output = bytes(execution.compile_output)
    assert compile_output.startswith(b"compiled ")
    stamp = compile_output.split()[1]
    results = execution.results.order_by("test_case__position")
    assert [result.verdict for result in results] == ["accepted", "accepted", "wrong_answer"]
    assert [bytes(result.stderr) for result in results] == [stamp + b"\n"] * 3


def test_a_compile_step_that_fails_in_docker_is_a_compilation_error(
    user: Any, compiling_docker_runtime: Runtime, client: Client
) -> None:
    execution = run(
        user,
        compiling_docker_runtime,
        "print('<b>unclosed</b>'\n",
        test_cases=[{"stdin": "1\n", "expected_output": "2"}],
    )
    assert (execution.verdict, execution.score) == ("compilation_error", Decimal("0.00"))
    assert execution.compile_status == "failed" and execution.compile_exit_code == 1
    compile_output = bytes(execution.compile_output)
    assert b"SyntaxError" in compile_output and b"<b>unclosed</b>" in compile_output
    assert execution.results.count() == 0
    client.force_login(user)
    page = client.get(execution.evaluation.get_absolute_url()).content.decode()
    assert text_of(page, "verdict") == "Compilation error"
    shown = text_of(page, "compile-output")
    assert "SyntaxError" in shown and "&lt;b&gt;unclosed&lt;/b&gt;" in shown
