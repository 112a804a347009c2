"""Helpers of the Kubernetes backend's tests: sessions, an observer, the supervisor's streams
and records as bytes, and play() of a session against the emulator."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from executions.backends.kubernetes import KubernetesBackend, resource_name
from sandbox.contract import CompileStep, RunRequest, RunResult, Session
from sandbox.policy import Limits, SandboxPolicy

from .kube_emulator import CONFIGMAPS, JOBS, Emulator, KubeletPlayer, Logs

NS = "evalplatform-sandbox"
HANDLE = "evalplatform-41-0a1b2c"
FILES = {"main.py": b"print(input())\n", "pkg/util.py": b"\x00\x01binary"}


def make_backend(api_client: Any, **options: Any) -> KubernetesBackend:
    defaults: dict[str, Any] = {
        "namespace": NS,
        "pending_timeout_s": 5,
        "grace_s": 2,
        "watch_timeout_s": 2,
    }
    return KubernetesBackend(api_client=api_client, **{**defaults, **options})


def make_policy(**limits: Any) -> SandboxPolicy:
    return SandboxPolicy(
        limits=Limits(**{"wall_time_ms": 5000, "memory_mb": 128, "output_bytes": 1000, **limits})
    )


def make_session(
    stdins: Sequence[bytes] = (b"one\n", b"two\x00\xff", b""),
    *,
    handle: str = HANDLE,
    compile_command: Sequence[str] = (),
    files: dict[str, bytes] | None = None,
    **limits: Any,
) -> Session:
    policy = make_policy(**limits)
    return Session(
        execution_id=41,
        handle=handle,
        image="evalplatform/python:3.11",
        command=("python3", "main.py"),
        files=files or FILES,
        policy=policy,
        stdins=list(stdins),
        labels={"evalplatform.evaluation": "7"},
        compile=CompileStep(tuple(compile_command), policy.limits) if compile_command else None,
    )


def make_request(handle: str = HANDLE, *, stdin: bytes = b"input\x00\xff", **limits: Any) -> Any:
    return RunRequest(
        execution_id=41,
        handle=handle,
        image="evalplatform/python:3.11",
        command=("python3", "main.py"),
        files=FILES,
        stdin=stdin,
        policy=make_policy(**limits),
        labels={"evalplatform.evaluation": "7"},
    )


# --- the supervisor's side of the protocol, as bytes --------------------------------------------


@dataclass(frozen=True)
class StreamStep:
    kind: str
    index: int
    limits: tuple[int, ...]  # wall, cpu, memory, output, file size, open files
    argv: list[bytes]
    stdin: bytes


@dataclass(frozen=True)
class Stream:
    nonce: str
    archive: bytes
    steps: list[StreamStep]


def parse_stream(data: bytes) -> Stream:
    """Read a supervisor's input stream as supervisor.c does; fail on anything else."""
    header, _, rest = data.partition(b"\n")
    assert header.startswith(b"EVALPLATFORM-SESSION 1 "), header
    line, _, rest = rest.partition(b"\n")
    assert line.startswith(b"A "), line
    length = int(line[2:])
    archive, rest = rest[:length], rest[length:]
    steps: list[StreamStep] = []
    while True:
        line, _, rest = rest.partition(b"\n")
        if line == b"Q":
            assert rest == b"", "bytes after the end of the stream"
            return Stream(header.split()[2].decode(), archive, steps)
        kind, *numbers = line.decode().split(" ")
        index, *limits, argv_length, stdin_length = (int(n) for n in numbers)
        argv = rest[:argv_length].split(b"\0")[:-1]
        stdin = rest[argv_length : argv_length + stdin_length]
        rest = rest[argv_length + stdin_length :]
        steps.append(StreamStep(kind, index, tuple(limits), argv, stdin))


def record(
    nonce: str,
    index: int,
    *,
    kind: str = "R",
    exit_code: int = 0,
    signal: int = 0,
    wall_ms: int = 12,
    cpu_ms: int = 8,
    peak_bytes: int = 9 * 1024 * 1024,
    flags: int = 0,
    stdout: bytes = b"",
    stderr: bytes = b"",
) -> bytes:
    """One record as supervisor.c's emit() writes it, unprivileged: a newline ends it."""
    header = (
        f"{nonce} {kind} {index} {exit_code} {signal} {wall_ms} {cpu_ms} {peak_bytes} {flags} "
        f"{len(stdout)} {len(stderr)}\n"
    )
    return header.encode() + stdout + stderr + b"\n"


# --- the cluster's side of a session ------------------------------------------------------------


class SandboxPod:
    """Plays the Job controller, the kubelet and the supervisor for one Job of a session."""

    def __init__(self, emulator: Emulator, api_client: Any, logs: Logs, name: str) -> None:
        self.name = name
        self.job = emulator.wait_for(JOBS, NS, name)
        self.configmap = emulator.wait_for(CONFIGMAPS, NS, name)
        self.player = KubeletPlayer(api_client, NS, self.job)
        data = {k: base64.b64decode(v) for k, v in self.configmap["binaryData"].items()}
        self.stream = parse_stream(data["stream"])
        self.compile_stream = (
            parse_stream(data["compile-stream"]) if "compile-stream" in data else None
        )
        self.log = logs.feed(self.player.pod_name, "session")
        self.compile_log = logs.feed(self.player.pod_name, "compile")
        self.created = False

    def create(self) -> None:
        """The Job controller made the pod and the scheduler placed it."""
        self.player.create_pod()
        self.player.scheduled()
        self.created = True

    def start(self) -> None:
        """The cases' container runs (after the compile step, when there is one)."""
        if not self.created:
            self.create()
        self.player.running()

    def report(self, index: int, **fields: Any) -> None:
        """The supervisor reports case ``index``."""
        self.log.write(record(self.stream.nonce, index, **fields))

    def echo_every_case(self) -> None:
        """Each case prints its stdin back, as ``print(input())`` would."""
        for step in self.stream.steps:
            self.report(step.index, stdout=step.stdin)

    def end(self, exit_code: int = 0, reason: str = "") -> None:
        """The cases' container ends (its log with it)."""
        self.log.close()
        self.player.terminated(exit_code, reason)

    def compile(self, exit_code: int = 0, **fields: Any) -> None:
        """The init container runs the compile step and ends."""
        assert self.compile_stream is not None
        self.create()
        self.player.compiling()
        self.compile_log.write(record(self.compile_stream.nonce, 0, exit_code=exit_code, **fields))
        self.compile_log.close()
        self.player.compile_ended(0 if exit_code == 0 else 1)


class Cluster:
    """Hands out a ``SandboxPod`` for each Job of the session as the backend creates it."""

    def __init__(self, emulator: Emulator, api_client: Any, logs: Logs, session: Session) -> None:
        self.emulator, self.api_client, self.logs = emulator, api_client, logs
        self.session = session

    def pod(self, first: int = 0) -> SandboxPod:
        """The Job that runs the cases from ``first`` on."""
        handle = self.session.handle
        name = resource_name(handle if first == 0 else f"{handle}-{first}")
        return SandboxPod(self.emulator, self.api_client, self.logs, name)


@dataclass
class Observer:
    """Records what a session tells its observer; answers False where told to."""

    stop_after: tuple[str, int] | None = None  # e.g. ("case_ended", 1)
    events: list[tuple[str, int]] = field(default_factory=list)
    results: dict[int, RunResult] = field(default_factory=dict)
    compile_result: RunResult | None = None
    handles: set[str] = field(default_factory=set)

    def _answer(self, event: str, index: int) -> bool:
        self.events.append((event, index))
        return self.stop_after != (event, index)

    def case_starting(self, index: int, handle: str) -> bool:
        self.handles.add(handle)
        return self._answer("case_starting", index)

    def compile_ended(self, result: RunResult) -> bool:
        self.compile_result = result
        return self._answer("compile_ended", 0)

    def case_ended(self, index: int, result: RunResult) -> bool:
        assert index not in self.results, f"case {index} was reported twice"
        self.results[index] = result
        return self._answer("case_ended", index)

    def only_failure(self) -> RunResult:
        """The one failure the session reported (it must be the last thing reported)."""
        reported = [*self.results.values()] + ([self.compile_result] if self.compile_result else [])
        failures = [result for result in reported if result.error_kind is not None]
        assert len(failures) == 1, self.events
        return failures[0]


Scenario = Callable[[Cluster], None]


def play_session(
    emulator: Emulator,
    api_client: Any,
    logs: Logs,
    backend: KubernetesBackend,
    session: Session,
    scenario: Scenario,
    observer: Observer | None = None,
    *,
    timeout: float = 60,
) -> Observer:
    """Run ``session`` in a thread while ``scenario`` plays the cluster's side of it."""
    observer = observer or Observer()
    worker = threading.Thread(target=backend.run_session, args=(session, observer))
    worker.start()
    try:
        scenario(Cluster(emulator, api_client, logs, session))
    finally:
        worker.join(timeout=timeout)
    assert not worker.is_alive(), "run_session() did not return"
    return observer


def every_case_echoes(cluster: Cluster) -> None:
    pod = cluster.pod()
    pod.start()
    pod.echo_every_case()
    pod.end(0)


def job_creations(emulator: Emulator) -> list[str]:
    """The names of the Jobs the backend asked for, in order."""
    return [
        request.data["metadata"]["name"]
        for request in emulator.on_loop(lambda: list(emulator.kmock))
        if request.method.value.upper() == "POST" and str(request.url.path).endswith("/jobs")
    ]


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def assert_cleaned_up(emulator: Emulator, name: str = HANDLE) -> None:
    assert emulator.get(JOBS, NS, name) is None, "the Job was left behind"
    assert emulator.get(CONFIGMAPS, NS, name) is None, "the ConfigMap was left behind"
