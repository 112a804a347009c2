"""The conformance suite every execution backend that can run here must pass.

Subclass ``BackendConformance`` in a backend's test module and provide three fixtures:

* ``backend``: the ``ExecutionBackend`` under test;
* ``runtime_image``: the image (or runtime name) a Python 3 request should use;
* ``sandbox_gone``: ``Callable[[str], bool]``, True when nothing the run named by that
  handle created is left (container, volume, pod, directory, ...).

Programs are Python 3, started as ``python3 main.py`` from the code directory. The suite
only relies on the contract in ``sandbox.contract``; timing assertions are loose
upper bounds (a correctness check, not a benchmark).
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from sandbox.contract import ErrorKind, ExecutionBackend, RunRequest, RunResult
from sandbox.policy import Limits, SandboxPolicy

COMMAND = ("python3", "main.py")
DEFAULT_LIMITS: dict[str, Any] = {"wall_time_ms": 5000, "memory_mb": 128, "output_bytes": 65536}
# Beyond the wall time a run may take this long to come back (kill, cleanup, a slow CI box).
SLACK_S = 6.0

Runner = Callable[..., RunResult]


def make_request(
    image: str,
    source: str | bytes,
    *,
    stdin: bytes = b"",
    files: Mapping[str, bytes] | None = None,
    execution_id: int = 0,
    **limits: Any,
) -> RunRequest:
    """A request running ``source`` as ``main.py`` (plus ``files``) under default limits."""
    if isinstance(source, str):
        source = textwrap.dedent(source).encode()
    return RunRequest(
        execution_id=execution_id,
        handle=f"evaltest-{uuid.uuid4().hex[:12]}",
        image=image,
        command=COMMAND,
        files={"main.py": source, **(files or {})},
        stdin=stdin,
        policy=SandboxPolicy(limits=Limits(**{**DEFAULT_LIMITS, **limits})),
    )


def run_checked(
    backend: ExecutionBackend,
    request: RunRequest,
    sandbox_gone: Callable[[str], bool],
    *,
    expect_error: ErrorKind | None = None,
) -> RunResult:
    """Run ``request``, then check the error kind, the time bound and that nothing is left."""
    started = time.monotonic()
    result = backend.run(request)
    elapsed = time.monotonic() - started
    assert result.error_kind == expect_error, (result.error_kind, result.error_message)
    assert elapsed < request.limits.wall_time_s + SLACK_S, f"run took {elapsed:.1f}s"
    assert sandbox_gone(request.handle), f"sandbox {request.handle} left behind"
    return result


class BackendConformance:
    """What every backend promises; see the module docstring for the fixtures it needs."""

    # Peak memory is reported "if known": a backend that measures it says so here, and its
    # figures must then be plausible; one that does not must leave it None.
    measures_peak_memory = False

    @pytest.fixture
    def run(
        self,
        backend: ExecutionBackend,
        runtime_image: str,
        sandbox_gone: Callable[[str], bool],
    ) -> Runner:
        def _run(source: str | bytes, **kwargs: Any) -> RunResult:
            expect_error = kwargs.pop("expect_error", None)
            request = make_request(runtime_image, source, **kwargs)
            return run_checked(backend, request, sandbox_gone, expect_error=expect_error)

        return _run

    def test_happy_path(self, run: Runner) -> None:
        result = run("print('hello')")
        assert result.exit_code == 0
        assert result.signal is None
        assert result.stdout == b"hello\n"
        assert result.stderr == b""
        assert not (result.timed_out or result.oom_killed or result.output_limit_exceeded)
        assert result.wall_time_ms is not None and 0 <= result.wall_time_ms < 5000

    def test_result_names_the_handle(
        self,
        backend: ExecutionBackend,
        runtime_image: str,
        sandbox_gone: Callable[[str], bool],
    ) -> None:
        request = make_request(runtime_image, "pass")
        assert run_checked(backend, request, sandbox_gone).handle == request.handle

    def test_stdout_and_stderr_are_separate(self, run: Runner) -> None:
        result = run("import sys; print('out'); print('err', file=sys.stderr)")
        assert (result.stdout, result.stderr) == (b"out\n", b"err\n")

    def test_stdin_echo_binary_and_large(self, run: Runner) -> None:
        # Every byte value (incl. Docker's detach keys ^P^Q) and more than a pipe buffer, so
        # a backend that writes all stdin before reading output would deadlock here.
        data = bytes(range(256)) * 2048
        result = run(
            "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())",
            stdin=data,
            output_bytes=len(data),
        )
        assert result.exit_code == 0
        assert result.stdout == data
        assert not result.stdout_truncated

    def test_empty_stdin_is_eof(self, run: Runner) -> None:
        result = run("import sys; print(repr(sys.stdin.read()))", wall_time_ms=3000)
        assert result.stdout == b"''\n"
        assert not result.timed_out

    def test_multi_file_source(self, run: Runner) -> None:
        result = run(
            "from helper import greet\nfrom pkg.util import TWO\nprint(greet('x'), TWO)",
            files={
                "helper.py": b"def greet(name):\n    return 'hi ' + name\n",
                "pkg/__init__.py": b"",
                "pkg/util.py": b"TWO = 2\n",
            },
        )
        assert result.stdout == b"hi x 2\n", result.stderr

    def test_source_is_read_only_and_scratch_is_writable(self, run: Runner) -> None:
        result = run(
            """
            import os
            for path in ("main.py", "/usr/new.py", "/new.py"):
                try:
                    open(path, "a").close()
                    print(path, "writable")
                except OSError:
                    print(path, "read-only")
            scratch = os.environ.get("TMPDIR", "/tmp")
            with open(os.path.join(scratch, "f"), "w") as f:
                f.write("ok")
            print(open(os.path.join(scratch, "f")).read())
            """
        )
        assert result.stdout == (
            b"main.py read-only\n/usr/new.py read-only\n/new.py read-only\nok\n"
        ), result.stderr

    def test_nonzero_exit(self, run: Runner) -> None:
        result = run("import sys; sys.exit(3)")
        assert result.exit_code == 3
        assert result.signal is None

    def test_uncaught_exception(self, run: Runner) -> None:
        result = run("raise ValueError('boom')")
        assert result.exit_code == 1
        assert b"ValueError: boom" in result.stderr

    def test_death_by_signal(self, run: Runner) -> None:
        result = run("import os, signal; print('before', flush=True); os.kill(os.getpid(), 9)")
        assert result.signal == 9
        assert result.exit_code != 0
        assert result.stdout == b"before\n"
        assert not result.timed_out and not result.oom_killed

    def test_time_limit(self, run: Runner) -> None:
        # A busy loop reaches a CPU limit equal to its wall limit at the same moment; a far
        # CPU limit makes this the wall clock's test (the CPU limit has its own, in sessions).
        result = run(
            "print('start', flush=True)\nwhile True: pass", wall_time_ms=1000, cpu_time_ms=10_000
        )
        assert result.timed_out
        assert result.stdout == b"start\n"
        assert result.wall_time_ms is not None and result.wall_time_ms >= 1000

    def test_sleep_past_deadline(self, run: Runner) -> None:
        started = time.monotonic()
        result = run("import time; time.sleep(60)", wall_time_ms=1000)
        assert result.timed_out
        assert time.monotonic() - started < 1 + SLACK_S

    def test_closing_output_does_not_escape_the_deadline(self, run: Runner) -> None:
        result = run("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)", wall_time_ms=1000)
        assert result.timed_out

    def test_memory_limit(self, run: Runner) -> None:
        result = run(
            "blocks = []\nwhile True: blocks.append(b'x' * (16 << 20))",
            memory_mb=64,
            wall_time_ms=10000,
        )
        assert result.oom_killed
        assert result.exit_code != 0
        assert not result.timed_out
        if self.measures_peak_memory:
            # The program reached the limit. A resident set also counts shared pages (the
            # interpreter's binary) that the memory cgroup does not, so it may pass the limit
            # by that much.
            assert result.peak_memory_bytes is not None
            assert 48 << 20 <= result.peak_memory_bytes <= 96 << 20, result.peak_memory_bytes

    def test_peak_memory(self, run: Runner) -> None:
        small = run("print('hi')")
        large = run("x = b'x' * (48 << 20)\nprint(len(x))", memory_mb=128)
        assert large.stdout == b"50331648\n"
        if not self.measures_peak_memory:
            assert small.peak_memory_bytes is None and large.peak_memory_bytes is None
            return
        assert small.peak_memory_bytes is not None and large.peak_memory_bytes is not None
        assert 0 < small.peak_memory_bytes < 48 << 20, small.peak_memory_bytes
        assert 48 << 20 <= large.peak_memory_bytes <= 128 << 20, large.peak_memory_bytes

    def test_output_limit(self, run: Runner) -> None:
        result = run(
            "import sys\nwhile True: sys.stdout.write('y' * 999 + '\\n')", output_bytes=4096
        )
        assert result.stdout_truncated and not result.stderr_truncated
        assert result.output_limit_exceeded
        assert result.stdout == b"y" * 999 + b"\n" + b"y" * 999 + b"\n" + result.stdout[2000:]
        assert len(result.stdout) == 4096
        assert not result.timed_out

    def test_stderr_limit(self, run: Runner) -> None:
        result = run("import sys\nsys.stderr.write('e' * 100000)", output_bytes=1000)
        assert result.stderr_truncated and not result.stdout_truncated
        assert result.stderr == b"e" * 1000

    def test_output_exactly_at_cap_is_not_truncated(self, run: Runner) -> None:
        result = run("import sys; sys.stdout.write('z' * 5000)", output_bytes=5000)
        assert result.stdout == b"z" * 5000
        assert not result.stdout_truncated
        assert result.exit_code == 0

    def test_stderr_exactly_at_cap_is_not_truncated(self, run: Runner) -> None:
        result = run("import sys; sys.stderr.write('w' * 5000)", output_bytes=5000)
        assert result.stderr == b"w" * 5000
        assert not result.stderr_truncated
        assert result.exit_code == 0

    def test_nul_bytes_and_invalid_utf8_come_back_raw(self, run: Runner) -> None:
        payload = b"\x00a\xff\xfe\xc3\x28\x80\x00\n"
        result = run(
            f"import sys; sys.stdout.buffer.write({payload!r}); sys.stderr.buffer.write(b'\\xff')"
        )
        assert result.stdout == payload
        assert result.stderr == b"\xff"

    def test_no_platform_environment(self, run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("EVALPLATFORM_FAKE_SECRET", "conformance-canary-7f3a")
        result = run(
            """
            import os, pathlib
            print(sorted(os.environ))
            for environ in pathlib.Path("/proc").glob("*/environ"):
                try:
                    print(environ.read_bytes())
                except OSError:
                    pass
            """
        )
        assert result.exit_code == 0, result.stderr
        assert b"conformance-canary-7f3a" not in result.stdout
        assert b"EVALPLATFORM_FAKE_SECRET" not in result.stdout
        assert b"'PATH'" in result.stdout  # the policy's environment did arrive

    def test_cancel_while_running(
        self,
        backend: ExecutionBackend,
        runtime_image: str,
        sandbox_gone: Callable[[str], bool],
    ) -> None:
        request = make_request(
            runtime_image,
            "import time\nprint('up', flush=True)\ntime.sleep(60)",
            wall_time_ms=30000,
        )
        box: dict[str, RunResult] = {}
        worker = threading.Thread(target=lambda: box.setdefault("r", backend.run(request)))
        worker.start()
        # A cancel before the sandbox exists is ignored, so keep cancelling until run()
        # returns; without a working cancel it returns only at the 30 s wall time, timed out.
        deadline = time.monotonic() + 60
        while worker.is_alive() and time.monotonic() < deadline:
            backend.cancel(request.handle)
            worker.join(timeout=0.25)
        assert not worker.is_alive(), "run() did not return after cancel"
        result = box["r"]
        assert result.error_kind == ErrorKind.CANCELLED, (result.error_kind, result.error_message)
        assert not result.timed_out
        assert sandbox_gone(request.handle)

    def test_cancel_unknown_handle_is_ignored(self, backend: ExecutionBackend, run: Runner) -> None:
        backend.cancel(f"evaltest-missing-{uuid.uuid4().hex[:8]}")  # no exception...
        # ...and the backend still runs programs.
        assert run("print('still fine')").stdout == b"still fine\n"

    def test_network_is_off(self, run: Runner) -> None:
        """No interface but loopback and no route: nothing to reach, whatever the address
        (a connection attempt alone would fail on an offline machine anyway)."""
        result = run(
            """
            import json, socket
            names = sorted(name for _, name in socket.if_nameindex())
            with open("/proc/net/route") as routes:
                count = len(routes.read().splitlines()) - 1
            print(json.dumps({"interfaces": names, "routes": count}))
            """
        )
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout) == {"interfaces": ["lo"], "routes": 0}

    def test_health(self, backend: ExecutionBackend) -> None:
        health = backend.health()
        assert health.ok, health.detail

    def test_describe(self, backend: ExecutionBackend) -> None:
        facts = backend.describe().facts
        assert facts and all(isinstance(value, str) and value for value in facts.values())
