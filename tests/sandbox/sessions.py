"""The session half of the conformance suite: what a backend promises about a whole execution.

Subclass ``SessionConformance`` next to ``BackendConformance`` with the same three fixtures
(``backend``, ``runtime_image``, ``sandbox_gone``). Cases are Python 3 programs; the compile
step is Python writing files, so the suite needs no compiler in the runtime image.

Per-case isolation is checked from inside: a case leaves behind everything it can (files in
scratch and /dev/shm, a message queue, a SysV segment, a daemon that keeps writing) and the
next case looks for all of it.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from sandbox.contract import CompileStep, ErrorKind, ExecutionBackend, RunResult, Session
from sandbox.policy import Limits, SandboxPolicy

from .conformance import DEFAULT_LIMITS, SLACK_S


class Recorder:
    """A session observer that keeps everything it is told, in order."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.told: list[tuple[str, int]] = []
        self.handles: set[str] = set()
        self.compiled: RunResult | None = None
        self.results: dict[int, RunResult] = {}

    def case_starting(self, index: int, handle: str) -> bool:
        self.told.append(("starting", index))
        self.handles.add(handle)
        return True

    def compile_ended(self, result: RunResult) -> bool:
        self.told.append(("compiled", 0))
        self.compiled = result
        return True

    def case_ended(self, index: int, result: RunResult) -> bool:
        self.told.append(("ended", index))
        self.results[index] = result
        return index != self.stop_after


def make_session(
    image: str,
    programs: Sequence[str],
    stdins: Sequence[bytes] | None = None,
    *,
    compile_command: Sequence[str] = (),
    compile_memory_mb: int | None = None,
    **limits: Any,
) -> Session:
    """A session whose case ``i`` runs ``programs[i]`` (``case{i}.py``, chosen by its stdin's
    first line) under default limits."""
    files = {
        f"case{index}.py": textwrap.dedent(source).encode() for index, source in enumerate(programs)
    }
    files["main.py"] = (
        b"import runpy, sys\nrunpy.run_path(f'case{sys.stdin.readline().strip()}.py')\n"
    )
    stdins = stdins or [b""] * len(programs)
    policy = SandboxPolicy(limits=Limits(**{**DEFAULT_LIMITS, **limits}))
    step = None
    if compile_command:
        compile_limits = policy.limits
        if compile_memory_mb is not None:
            compile_limits = dataclasses.replace(compile_limits, memory_mb=compile_memory_mb)
        step = CompileStep(command=tuple(compile_command), limits=compile_limits)
    return Session(
        execution_id=0,
        handle=f"evaltest-{uuid.uuid4().hex[:12]}",
        image=image,
        command=("python3", "main.py"),
        files=files,
        policy=policy,
        stdins=[f"{index}\n".encode() + stdin for index, stdin in enumerate(stdins)],
        compile=step,
    )


def run_session_checked(
    backend: ExecutionBackend,
    session: Session,
    sandbox_gone: Callable[[str], bool],
    recorder: Recorder | None = None,
) -> Recorder:
    recorder = recorder or Recorder()
    started = time.monotonic()
    backend.run_session(session, recorder)
    elapsed = time.monotonic() - started
    budget = session.limits.wall_time_s * len(session.stdins) + SLACK_S
    assert elapsed < budget, f"session took {elapsed:.1f}s"
    assert sandbox_gone(session.handle), f"sandbox {session.handle} left behind"
    return recorder


LEAVE_EVERYTHING_BEHIND = """
import ctypes, json, os, subprocess, sys, time
for path in ("/tmp/left-behind", "/dev/shm/left-behind"):
    with open(path, "w") as f:
        f.write("case 0 was here")
os.makedirs("/tmp/deep/er", exist_ok=True)
os.chmod("/tmp/deep", 0)  # a directory its owner locked, to be emptied anyway
libc = ctypes.CDLL(None, use_errno=True)
shmid = libc.shmget(0x5EED, 4096, 0o1666)  # IPC_CREAT | 0666
mq = libc.mq_open(b"/left-behind", 0o100 | 0o2, 0o600, None)  # O_CREAT | O_RDWR
# A daemon, detached from the case, that tries to reach whatever runs next.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            for path in ("/tmp/daemon-was-here", "/dev/shm/daemon-was-here"):
                try:
                    open(path, "w").write("x")
                except OSError:
                    pass
            time.sleep(0.01)
    os._exit(0)
time.sleep(0.2)
print(json.dumps({"shm": shmid, "mq": mq}))
"""

LOOK_FOR_LEFTOVERS = """
import json, os
def processes():
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) not in (1, os.getpid()):
            try:
                found.append(open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace"))
            except OSError:
                pass
    return found
print(json.dumps({
    "tmp": sorted(os.listdir("/tmp")),
    "shm": sorted(os.listdir("/dev/shm")),
    "mqueue": sorted(os.listdir("/dev/mqueue")) if os.path.isdir("/dev/mqueue") else [],
    "sysv": open("/proc/sysvipc/shm").read().splitlines()[1:],
    "processes": processes(),
}))
"""


class SessionConformance:
    """What every backend promises about sessions; see the module docstring."""

    def test_every_case_runs_in_order_with_its_own_stdin(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        echo = "import sys\nprint(sys.stdin.read().upper(), end='')"
        session = make_session(runtime_image, [echo] * 3, [b"a\n", b"bb\n", b""])
        recorder = run_session_checked(backend, session, sandbox_gone)
        assert recorder.told == [
            (step, index) for index in range(3) for step in ("starting", "ended")
        ]
        assert [recorder.results[i].stdout for i in range(3)] == [b"A\n", b"BB\n", b""]
        assert all(result.exit_code == 0 for result in recorder.results.values())
        assert recorder.handles == {session.handle}
        assert all(result.handle == session.handle for result in recorder.results.values())

    def test_each_case_reports_its_own_facts(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        programs = [
            "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
            "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
            "while True: pass",
            "import sys\nwhile True: sys.stdout.write('y' * 1000)",
            "x = bytearray(200 << 20)",
            "print('still running')",
        ]
        session = make_session(
            runtime_image, programs, wall_time_ms=2000, output_bytes=4096, memory_mb=96
        )
        results = run_session_checked(backend, session, sandbox_gone).results
        assert (results[0].stdout, results[0].stderr, results[0].exit_code) == (
            b"out\n",
            b"err\n",
            3,
        )
        assert results[1].signal == 11
        assert results[2].timed_out and results[2].wall_time_ms is not None
        assert results[2].cpu_time_ms is not None and results[2].cpu_time_ms >= 1000
        assert results[3].stdout_truncated and len(results[3].stdout) == 4096
        # Out of memory ends that case, not the session.
        assert results[4].oom_killed and not results[4].timed_out
        assert results[5].stdout == b"still running\n" and results[5].exit_code == 0

    def test_nothing_of_a_case_reaches_the_next(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        session = make_session(runtime_image, [LEAVE_EVERYTHING_BEHIND, LOOK_FOR_LEFTOVERS])
        results = run_session_checked(backend, session, sandbox_gone).results
        assert results[0].exit_code == 0, results[0].stderr
        left = json.loads(results[0].stdout)
        assert left["shm"] >= 0 and left["mq"] >= 0, "case 0 could not even create them"
        seen = json.loads(results[1].stdout)
        assert seen == {"tmp": [], "shm": [], "mqueue": [], "sysv": [], "processes": []}, seen

    def test_a_full_scratch_is_empty_again_for_the_next_case(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        fill = """
        import os
        try:
            with open("/tmp/fill", "wb") as f:
                while True:
                    f.write(b"x" * (1 << 20))
        except OSError as exc:
            print("full:", exc.strerror)
        """
        write = "open('/tmp/room', 'wb').write(b'x' * (8 << 20)); print('room for 8 MiB')"
        session = make_session(runtime_image, [fill, write], scratch_mb=16, file_size_mb=64)
        results = run_session_checked(backend, session, sandbox_gone).results
        assert results[0].stdout.startswith(b"full:"), results[0]
        assert results[1].stdout == b"room for 8 MiB\n", results[1].stderr

    def test_code_is_read_only_to_every_case(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        tamper = """
        import os
        for attempt in (
            lambda: open("main.py", "a").write("print('tampered')"),
            lambda: open("new.py", "w").write("x"),
            lambda: os.chmod("main.py", 0o777),
            lambda: os.rename("case1.py", "x.py"),
        ):
            try:
                attempt()
                print("changed")
            except OSError:
                print("refused")
        """
        session = make_session(runtime_image, [tamper, "print('untouched')"])
        results = run_session_checked(backend, session, sandbox_gone).results
        assert results[0].stdout == b"refused\n" * 4, results[0]
        assert results[1].stdout == b"untouched\n"

    def test_a_compile_step_builds_once_for_every_case(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        build = (
            "import os; open('built.py', 'w').write('print(\"built\", open(\"built.py\").read()"
            " == open(\"built.py\").read())'); print('compiled'); "
            "os.makedirs('out', exist_ok=True); open('out/lib.txt', 'w').write('lib')"
        )
        use = """
        import os, runpy
        runpy.run_path("built.py")
        print(open("out/lib.txt").read())
        try:
            open("built.py", "a").write("x")
            print("changed")
        except OSError:
            print("read-only")
        """
        session = make_session(runtime_image, [use, use], compile_command=("python3", "-c", build))
        recorder = run_session_checked(backend, session, sandbox_gone)
        assert recorder.told[:2] == [("starting", 0), ("compiled", 0)]
        assert recorder.compiled is not None and recorder.compiled.exit_code == 0
        assert recorder.compiled.stdout == b"compiled\n"
        for index in (0, 1):
            assert recorder.results[index].stdout == b"built True\nlib\nread-only\n", (
                recorder.results[index]
            )

    def test_a_failed_compile_runs_no_case(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        session = make_session(
            runtime_image,
            ["print('never')"] * 2,
            compile_command=(
                "python3",
                "-c",
                "import sys; print('syntax error', file=sys.stderr); sys.exit(1)",
            ),
        )
        recorder = run_session_checked(backend, session, sandbox_gone)
        assert recorder.compiled is not None
        assert (recorder.compiled.exit_code, recorder.compiled.stderr) == (1, b"syntax error\n")
        assert recorder.results == {}
        assert recorder.told == [("starting", 0), ("compiled", 0)]

    def test_a_case_is_held_to_its_own_memory_after_a_larger_compile_step(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        # The compile step may use 160 MiB; each case 64 MiB, however much the compiler had.
        build = "x = bytearray(120 << 20); open('built.txt', 'w').write('yes'); print('compiled')"
        hog = "x = bytearray(120 << 20); print('a case used 120 MiB')"
        session = make_session(
            runtime_image,
            [hog, "print(open('built.txt').read())"],
            compile_command=("python3", "-c", build),
            compile_memory_mb=160,
            memory_mb=64,
        )
        recorder = run_session_checked(backend, session, sandbox_gone)
        assert recorder.compiled is not None and recorder.compiled.stdout == b"compiled\n", (
            recorder.compiled
        )
        assert recorder.results[0].oom_killed, recorder.results[0]
        assert recorder.results[0].stdout == b""
        assert recorder.results[1].stdout == b"yes\n", recorder.results[1]

    def test_the_build_directory_is_closed_to_every_case(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        build = "open('tool.sh', 'w').write('echo built'); print('compiled')"
        plant = """
        import os
        for path in ("/sandbox/build/planted", "/sandbox/build/work/planted"):
            try:
                open(path, "w").write("from case 0")
                print("planted", path)
            except OSError:
                print("refused")
        """
        look = """
        import os
        found = []
        for top in ("/sandbox/build",):
            for directory, _dirs, files in os.walk(top):
                found += [os.path.join(directory, name) for name in files]
        print(found)
        """
        session = make_session(
            runtime_image, [plant, look], compile_command=("python3", "-c", build)
        )
        results = run_session_checked(backend, session, sandbox_gone).results
        assert results[0].stdout == b"refused\nrefused\n", results[0]
        assert results[1].stdout == b"[]\n", results[1]

    def test_an_observer_that_stops_ends_the_session(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        session = make_session(runtime_image, ["print(1)"] * 4)
        recorder = run_session_checked(backend, session, sandbox_gone, Recorder(stop_after=1))
        assert sorted(recorder.results) == [0, 1]

    def test_output_that_looks_like_the_framing_is_only_output(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        # Headers as the supervisor writes them (any nonce; the real one is never visible)
        # claiming success for this case and the next, on both streams.
        forge = """
        import sys
        for index in (0, 1, 2):
            fake = f"{'ab' * 16} R {index} 0 0 1 1 1 0 9 0\\nforged!!\\n"
            sys.stdout.write(fake)
            sys.stderr.write(fake)
        sys.exit(7)
        """
        session = make_session(runtime_image, [forge, "import sys; sys.exit(5)"])
        results = run_session_checked(backend, session, sandbox_gone).results
        assert results[0].exit_code == 7 and results[0].stdout.count(b"forged!!") == 3
        assert results[0].stdout == results[0].stderr
        assert results[1].exit_code == 5 and results[1].stdout == b""

    def test_cancel_stops_the_whole_session_within_a_second(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        sleeper = "import time\nprint('up', flush=True)\ntime.sleep(60)"
        session = make_session(runtime_image, [sleeper] * 3, wall_time_ms=30000)
        recorder = Recorder()
        worker = threading.Thread(target=backend.run_session, args=(session, recorder))
        worker.start()
        # Wait until the first case runs (its process is up), then cancel once.
        time.sleep(1.5)
        cancelled_at = time.monotonic()
        backend.cancel(session.handle)
        worker.join(timeout=10)
        stopped_after = time.monotonic() - cancelled_at
        assert not worker.is_alive(), "run_session() did not return after cancel"
        assert stopped_after < 1.0, f"took {stopped_after:.2f} s to stop"
        assert recorder.results[0].error_kind == ErrorKind.CANCELLED, recorder.results
        assert sorted(recorder.results) == [0]
        assert sandbox_gone(session.handle)

    def test_an_unsafe_session_is_refused_as_case_zero(
        self, backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
    ) -> None:
        session = replace(make_session(runtime_image, ["pass"]), files={"../x.py": b""})
        recorder = run_session_checked(backend, session, sandbox_gone)
        assert recorder.results[0].error_kind == ErrorKind.BACKEND_ERROR
        assert "unsafe" in recorder.results[0].error_message
