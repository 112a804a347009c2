"""The sandbox pod the Kubernetes backend renders, run on Docker the way a kubelet would
(``kube_docker``): the supervisor unprivileged, as uid 65534 with no capability, as PID 1 of
each container, the code a read-only mount, its input a file. No cluster runs here; this is
where the per-case isolation the Kubernetes profile claims is exercised, with the same
supervisor binary and the manifests exactly as rendered.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from executions.backends.kubernetes.manifests import (
    KubernetesOptions,
    Part,
    configmap_for,
    job_for,
    part_for,
)
from sandbox import supervisor
from sandbox.contract import CompileStep, RunResult, Session
from sandbox.policy import Limits, SandboxPolicy

from .kube_docker import PodRun, run_pod

pytestmark = pytest.mark.real_service

LIMITS = Limits(wall_time_ms=10_000, memory_mb=128, output_bytes=64 * 1024)
# One program for every case; its stdin says what to do.
PROGRAM = r"""
import ctypes, errno, json, os, signal, subprocess, sys

def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def attach_to_the_supervisor():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc.ptrace(16, 1, None, None) == -1:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")

def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()

def write(path, data):
    with open(path, "w") as f:
        f.write(data)

case = sys.stdin.buffer.read()
if case == b"leave traces":
    facts = {
        "uid": os.getuid(),
        "write the code": attempt(lambda: write("/sandbox/code/new.txt", "x")),
        "change the build": attempt(lambda: write("/sandbox/code/artifact.txt", "forged")),
        "ptrace the supervisor": attempt(attach_to_the_supervisor),
        "open the supervisor's stdout": attempt(lambda: open("/proc/1/fd/1", "wb")),
        "read the supervisor's environment": attempt(lambda: read("/proc/1/environ")),
        "read every case's input": attempt(lambda: read("/sandbox/input/stream", "rb")),
        "kill the supervisor": attempt(lambda: os.kill(1, signal.SIGKILL)),
        "stop the supervisor": attempt(lambda: os.kill(1, signal.SIGSTOP)),
    }
    facts["inputs seen"] = b"echo me" in read("/sandbox/input/stream", "rb")
    write("/tmp/left-behind", "x")
    write("/dev/shm/left-behind", "x")
    write("/dev/termination-log", "a note for the next case")
    subprocess.Popen(["sleep", "1000"], start_new_session=True)
    print(json.dumps(facts))
elif case == b"look for traces":
    others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
    print(json.dumps({
        "scratch": os.listdir("/tmp") + os.listdir("/dev/shm"),
        "termination log": read("/dev/termination-log"),
        "processes": others,
        "artifact": read("artifact.txt") if os.path.exists("artifact.txt") else None,
        "code": sorted(name for name in os.listdir(".") if not name.startswith("..")),
    }))
else:
    sys.stdout.buffer.write(case)
"""
BUILD = "import os; open('artifact.txt', 'w').write('built'); print(sorted(os.listdir('.')))"
STDINS = [b"leave traces", b"look for traces", b"echo me \x00\xff"]


def render(compile_command: tuple[str, ...] = ()) -> tuple[Part, dict[str, Any], dict[str, Any]]:
    session = Session(
        execution_id=1,
        handle="evalplatform-pod-on-docker",
        image="evalplatform/python:3.11",
        command=("python3", "main.py"),
        files={"main.py": PROGRAM.encode()},
        policy=SandboxPolicy(limits=LIMITS),
        stdins=STDINS,
        compile=CompileStep(compile_command, LIMITS) if compile_command else None,
    )
    binary = supervisor.binary()
    part = part_for(session, 0, supervisor_size=len(binary))
    configmap = configmap_for(part, "sandbox", supervisor_binary=binary)
    return part, job_for(part, KubernetesOptions()), configmap


def records(pod: PodRun, container: str, nonce: str) -> list[supervisor.Record]:
    reader = supervisor.RecordReader(nonce, LIMITS.output_bytes, line_ended=True)
    found = list(reader.feed(pod.containers[container].log))
    assert reader.pending == 0, pod.containers[container].log[-500:]
    return found


def results(found: list[supervisor.Record]) -> list[RunResult]:
    assert not any(record.failed for record in found), [r.message for r in found]
    return [record.result for record in found]


@pytest.fixture
def api(docker_api: Any, runtime_image: str) -> Any:
    return docker_api


def test_each_case_is_a_fresh_process_that_cannot_reach_the_supervisor(api: Any) -> None:
    part, job, configmap = render(("python3", "-c", BUILD))
    pod = run_pod(api, job, configmap)

    assert pod.containers["compile"].exit_code == 0
    (built,) = results(records(pod, "compile", part.compile_nonce))
    assert built.exit_code == 0 and b"'main.py'" in built.stdout, built
    assert pod.containers["session"].exit_code == 0, pod.containers["session"].log[-500:]
    traces, look, echo = results(records(pod, "session", part.nonce))

    assert traces.exit_code == 0, traces.stderr
    facts = json.loads(traces.stdout)
    assert facts["uid"] == 65534
    # What the compile step made is the cases' code, read-only to them.
    assert facts["write the code"] == "EROFS" and facts["change the build"] == "EROFS"
    # The supervisor is not dumpable: no ptrace, no way to its descriptors or memory.
    assert facts["ptrace the supervisor"] == "EPERM"
    assert facts["open the supervisor's stdout"] in ("EACCES", "EPERM")
    assert facts["read the supervisor's environment"] in ("EACCES", "EPERM")
    # The same uid may signal PID 1, but PID 1 ignores what it has no handler for: the
    # session went on, as the next records show.
    assert facts["kill the supervisor"] == "ok" and facts["stop the supervisor"] == "ok"
    # What the Kubernetes profile concedes: the stream file holds every case's input.
    assert facts["read every case's input"] == "ok" and facts["inputs seen"] is True

    assert look.exit_code == 0, look.stderr
    seen = json.loads(look.stdout)
    assert seen["scratch"] == [], "scratch and /dev/shm are emptied between cases"
    assert seen["termination log"] == "", "the termination log is emptied between cases"
    assert seen["processes"] == [], "the previous case's processes are gone"
    assert seen["artifact"] == "built"
    assert seen["code"] == ["artifact.txt", "main.py"]

    assert (echo.exit_code, echo.stdout) == (0, b"echo me \x00\xff")
    assert pod.termination_logs["session"] == b""


def test_a_failed_compile_step_keeps_the_cases_from_starting(api: Any) -> None:
    failing = "import sys; print('main.py:1: error', file=sys.stderr); sys.exit(3)"
    part, job, configmap = render(("python3", "-c", failing))
    pod = run_pod(api, job, configmap)
    (compiled,) = results(records(pod, "compile", part.compile_nonce))
    assert (compiled.exit_code, compiled.stderr) == (3, b"main.py:1: error\n")
    assert pod.containers["compile"].exit_code == 1, "the init container fails"
    assert "session" not in pod.containers, "so the cases' container never starts"


def test_without_a_compile_step_the_code_is_the_read_only_configmap(api: Any) -> None:
    part, job, configmap = render()
    pod = run_pod(api, job, configmap)
    assert set(pod.containers) == {"session"}
    traces, look, echo = results(records(pod, "session", part.nonce))
    facts = json.loads(traces.stdout)
    assert facts["write the code"] == "EROFS"
    seen = json.loads(look.stdout)
    assert (seen["code"], seen["processes"], seen["scratch"]) == (["main.py"], [], [])
    assert echo.stdout == b"echo me \x00\xff"
