"""A corpus of hostile programs and the contained outcome each must have, for any backend.

Each ``Attack`` is a Python 3 ``main.py``, the limits it runs under and a ``check`` of the
``RunResult``. Programs that probe the sandbox print one JSON object as their last line of
stdout; the checks read it with ``observed``. A backend test runs every attack and then
asserts, as for any run, that no infrastructure error happened, that the run came back
within its wall time plus a slack, and that the sandbox is gone.

``CANARY_ENV`` must be set in the test process's environment while the corpus runs: the
secret-hunting attack looks for its value everywhere the sandbox can read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.contract import RunResult

CANARY_ENV = "EVALPLATFORM_FAKE_SECRET"
CANARY_VALUE = "canary-9c1e5b7d-do-not-leak"


@dataclass(frozen=True)
class Attack:
    name: str
    source: str
    check: Callable[[RunResult], None]
    limits: dict[str, Any] = field(default_factory=dict)
    stdin: bytes = b""
    # The verdict the platform gives the contained outcome (judging.run_verdict).
    verdict: str = "accepted"


def observed(result: RunResult) -> dict[str, Any]:
    """The JSON object a probing program printed last."""
    lines = result.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {result.stderr[-2000:]!r}"
    value = json.loads(lines[-1])
    assert isinstance(value, dict)
    return value


def _timed_out(result: RunResult) -> None:
    assert result.timed_out, result


def _oom(result: RunResult) -> None:
    assert result.oom_killed, result
    assert not result.timed_out


def _capped(cap: int) -> Callable[[RunResult], None]:
    def check(result: RunResult) -> None:
        assert result.stdout_truncated, result
        assert len(result.stdout) <= cap
        assert not result.timed_out

    return check


def _all_denied(result: RunResult) -> None:
    """Every probe in the printed object failed (its value is an error name, not "ok")."""
    assert result.exit_code == 0, result.stderr[-2000:]
    probes = observed(result)
    assert probes, "no probes ran"
    leaked = {probe: outcome for probe, outcome in probes.items() if outcome == "ok"}
    assert not leaked, f"allowed: {leaked}"


# A helper every probing program starts with: run a probe, record "ok" or the errno name.
_PROBE = """
import errno, json, os, sys
results = {}
def probe(name, action):
    try:
        action()
        results[name] = "ok"
    except OSError as exc:
        results[name] = errno.errorcode.get(exc.errno, str(exc.errno))
    except Exception as exc:
        results[name] = type(exc).__name__
def done():
    print(json.dumps(results))
"""

_LIBC = """
import ctypes, ctypes.util
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
def check(rc):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
"""


def _fill_scratch(result: RunResult) -> None:
    facts = observed(result)
    assert facts["error"] in ("ENOSPC", "EFBIG"), facts
    assert facts["written"] <= 16 * 1024 * 1024, facts


def _huge_file(result: RunResult) -> None:
    facts = observed(result)
    assert facts["error"] == "EFBIG", facts
    assert facts["written"] <= 4 * 1024 * 1024, facts


def _background(result: RunResult) -> None:
    assert result.exit_code == 0, result
    assert not result.timed_out
    assert result.stdout == b"main done\n"
    assert result.wall_time_ms is not None and result.wall_time_ms < 5000


def _secrets(result: RunResult) -> None:
    assert result.exit_code == 0, result.stderr[-2000:]
    assert CANARY_VALUE.encode() not in result.stdout + result.stderr
    assert CANARY_ENV.encode() not in result.stdout + result.stderr
    facts = observed(result)
    assert not facts["secret_paths"], facts
    for name in facts["env"]:
        assert not any(word in name.upper() for word in ("SECRET", "TOKEN", "PASSWORD", "KEY")), (
            facts["env"]
        )


def _docker_socket(result: RunResult) -> None:
    facts = observed(result)
    assert facts["found"] == [], facts
    assert facts["mounts_mention_docker_sock"] is False, facts


def _processes(result: RunResult) -> None:
    facts = observed(result)
    assert facts["attach_host_pid"] != "ok", facts
    # Only the sandbox's own processes are visible: its init and the program.
    assert len(facts["pids"]) <= 3, facts
    assert not set(facts["comms"]) & {"dockerd", "containerd", "pytest", "python"}, facts


def _privileges(result: RunResult) -> None:
    facts = observed(result)
    assert facts["euid"] == 65534 and facts["egid"] == 65534, facts
    assert facts["status"]["CapEff"] == "0000000000000000", facts
    assert facts["status"]["CapPrm"] == "0000000000000000", facts
    # The bounding set may keep the supervisor's own (SETUID, SETGID, KILL: 0xe0); with no
    # capability permitted, no-new-privileges and a non-root uid, none can be regained.
    assert int(facts["status"]["CapBnd"], 16) & ~0xE0 == 0, facts
    assert facts["status"]["NoNewPrivs"] == "1", facts
    assert facts["status"]["Seccomp"] == "2", facts
    assert all(outcome != "ok" for outcome in facts["attempts"].values()), facts


def _supervisor_untouchable(result: RunResult) -> None:
    # Every signal to the supervisor is refused, and the run still reports normally.
    facts = observed(result)
    assert facts["parent"] == 1, facts
    assert all(outcome in ("EPERM", "ESRCH") for outcome in facts["attempts"].values()), facts
    assert result.exit_code == 0 and not result.timed_out, result


def _raw_bytes(result: RunResult) -> None:
    assert result.stdout == b"\x00\xff\xfe\x00\xc0\xafA\n", result.stdout
    assert result.exit_code == 0


def _ignored_stdin(result: RunResult) -> None:
    assert result.exit_code == 0, result
    assert result.stdout == b"ignoring stdin\n"


def _open_files(result: RunResult) -> None:
    facts = observed(result)
    assert facts["error"] == "EMFILE", facts
    assert facts["opened"] <= 64, facts


ATTACKS: list[Attack] = [
    Attack(
        "fork_bomb",
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        _timed_out,
        {"wall_time_ms": 2000, "pids": 32},
        verdict="time_limit",
    ),
    Attack("memory_bomb", "x = b'x' * (1 << 30)", _oom, {"memory_mb": 64}, verdict="memory_limit"),
    Attack(
        "fill_scratch",
        _PROBE
        + """
written, error = 0, None
try:
    for i in range(1000):
        with open(f"/tmp/fill{i}", "wb") as f:
            for _ in range(64):
                f.write(b"\\0" * 65536)
                written += 65536
except OSError as exc:
    error = errno.errorcode.get(exc.errno)
print(json.dumps({"written": written, "error": error}))
""",
        _fill_scratch,
        {"scratch_mb": 16, "file_size_mb": 16, "memory_mb": 128},
    ),
    Attack(
        "file_over_size_limit",
        _PROBE
        + """
written, error = 0, None
try:
    with open("/tmp/big", "wb") as f:
        while True:
            f.write(b"\\0" * 65536)
            f.flush()
            written += 65536
except OSError as exc:
    error = errno.errorcode.get(exc.errno)
print(json.dumps({"written": written, "error": error}))
""",
        _huge_file,
        {"scratch_mb": 32, "file_size_mb": 4},
    ),
    Attack(
        "write_outside_scratch",
        _PROBE
        + """
# Only scratch is writable, and it runs nothing: the code directory (which may hold what a
# compile step built, and so allows running) is read-only to the program, its files too.
for path in ("/etc/passwd", "/evil", "/usr/bin/evil", "/sandbox/evil",
             "/proc/sysrq-trigger", "/sys/kernel/evil", "/dev/evil",
             os.getcwd() + "/main.py", os.getcwd() + "/evil", "/sandbox/bin/evil"):
    probe("write " + path, lambda path=path: open(path, "a").close())
probe("chmod main.py", lambda: os.chmod("main.py", 0o777))
probe("remove main.py", lambda: os.unlink("main.py"))
def exec_from(directory):
    path = directory + "/x.sh"
    with open(path, "w") as script:
        script.write("#!/bin/sh\\necho hi\\n")
    os.chmod(path, 0o755)
    os.execv(path, [path])
probe("exec from scratch", lambda: exec_from("/tmp"))
probe("exec from code dir", lambda: exec_from(os.getcwd()))
done()
""",
        _all_denied,
    ),
    Attack(
        "endless_stdout",
        "import sys\nwhile True:\n    sys.stdout.write('y' * 100 + '\\n')",
        _capped(8192),
        {"output_bytes": 8192},
        verdict="output_limit",
    ),
    Attack(
        "huge_line_without_newline",
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
        _capped(8192),
        {"output_bytes": 8192},
        verdict="output_limit",
    ),
    Attack(
        "sleep_past_deadline",
        "import time\ntime.sleep(3600)",
        _timed_out,
        {"wall_time_ms": 1000},
        verdict="time_limit",
    ),
    Attack(
        "busy_loop",
        "while True:\n    pass",
        _timed_out,
        {"wall_time_ms": 1000},
        verdict="time_limit",
    ),
    Attack(
        "background_process_outlives_main",
        """
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(30)
                print("daemon survived", flush=True)
            os._exit(0)
        print("main done", flush=True)
        """,
        _background,
        {"wall_time_ms": 20000},
    ),
    Attack(
        "read_shadow",
        _PROBE
        + """
for path in ("/etc/shadow", "/etc/gshadow", "/root/.bash_history", "/proc/kcore",
             "/proc/1/mem", "/dev/mem", "/dev/kmsg", "/sys/firmware/dmi/tables/DMI"):
    probe("read " + path, lambda path=path: open(path, "rb").read(1))
done()
""",
        _all_denied,
    ),
    Attack(
        "hunt_platform_secrets",
        """
import glob, json, os
env = dict(os.environ)
print(env)
for environ in glob.glob("/proc/*/environ"):
    try:
        print(environ, open(environ, "rb").read())
    except OSError:
        pass
candidates = ["/run/secrets", "/var/run/secrets", "/var/run/secrets/kubernetes.io",
              "/etc/evalplatform", "/root/.docker/config.json", "/.dockerenv"]
found = [path for path in candidates if os.path.exists(path) and path != "/.dockerenv"]
print(json.dumps({"env": sorted(env), "secret_paths": found}))
""",
        _secrets,
    ),
    Attack(
        "find_docker_socket",
        """
        import json, os, socket
        paths = ["/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                 "/var/run/docker", "/run/podman/podman.sock", "/tmp/docker.sock"]
        found = [p for p in paths if os.path.exists(p)]
        for root, dirs, files in os.walk("/"):
            if root.startswith(("/proc", "/sys")):
                dirs[:] = []
                continue
            found += [os.path.join(root, f) for f in files if f.endswith(".sock")]
        mounts = open("/proc/mounts").read()
        print(json.dumps({"found": found, "mounts_mention_docker_sock": "docker.sock" in mounts}))
        """,
        _docker_socket,
    ),
    Attack(
        "network_egress",
        _PROBE
        + """
import socket
probe("dns example.com", lambda: socket.getaddrinfo("example.com", 80))
probe("dns registry", lambda: socket.getaddrinfo("registry-1.docker.io", 443))
for host, port in (("169.254.169.254", 80), ("1.1.1.1", 53), ("172.17.0.1", 2375),
                   ("10.0.0.1", 80), ("127.0.0.1", 2375), ("127.0.0.1", 5432),
                   ("127.0.0.1", 6379)):
    probe(f"tcp {host}:{port}",
          lambda host=host, port=port: socket.create_connection((host, port), timeout=2).close())
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("8.8.8.8", 53))
probe("udp 8.8.8.8:53", udp)
extra = [name for name in os.listdir("/sys/class/net") if name != "lo"]
results["interfaces besides lo"] = "ok" if extra else "none"
done()
""",
        _all_denied,
    ),
    Attack(
        "mount_and_unshare",
        _PROBE
        + _LIBC
        + """
os.makedirs("/tmp/m", exist_ok=True)
probe("mount tmpfs", lambda: check(libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None)))
probe("remount root rw", lambda: check(libc.mount(None, b"/", None, 32, None)))  # MS_REMOUNT
probe("unshare user", lambda: check(libc.unshare(0x10000000)))
probe("unshare mount", lambda: check(libc.unshare(0x00020000)))
probe("unshare net", lambda: check(libc.unshare(0x40000000)))
probe("chroot", lambda: os.chroot("/tmp"))
probe("mknod", lambda: os.mknod("/tmp/sda", 0o600 | 0o060000, os.makedev(8, 0)))
done()
""",
        _all_denied,
    ),
    Attack(
        "ptrace_and_processes",
        _PROBE
        + _LIBC
        + """
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
def attach(pid):
    if libc.ptrace(16, pid, None, None) == -1:  # PTRACE_ATTACH
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
probe("attach", lambda: attach(HOST_PID))
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
comms = []
for pid in pids:
    try:
        comms.append(open(f"/proc/{pid}/comm").read().strip())
    except OSError:
        pass
print(json.dumps({"attach_host_pid": results["attach"], "pids": pids, "comms": comms}))
""".replace("HOST_PID", str(os.getpid())),  # the test process: a host pid
        _processes,
    ),
    Attack(
        "ptrace_or_read_the_supervisor",
        _PROBE
        + _LIBC
        + """
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
def trace(request, pid):
    def go():
        if libc.ptrace(request, pid, None, None) == -1:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return go
supervisor = os.getppid()
for pid in sorted({1, supervisor}):
    probe(f"attach {pid}", trace(16, pid))  # PTRACE_ATTACH
    probe(f"seize {pid}", trace(0x4206, pid))  # PTRACE_SEIZE
    for name in ("mem", "environ", "fd/0", "fd/1", "fd/2", "maps", "root/sandbox/bin"):
        probe(f"read /proc/{pid}/{name}", lambda: open(f"/proc/{pid}/{name}", "rb").read(1))
    probe(f"write /proc/{pid}/fd/1", lambda: open(f"/proc/{pid}/fd/1", "wb").write(b"forged"))
    probe(f"list /proc/{pid}/fd", lambda: os.listdir(f"/proc/{pid}/fd"))
probe("read the supervisor binary", lambda: open("/sandbox/bin/supervisor", "rb").read(1))
done()
""",
        _all_denied,
    ),
    Attack(
        "setuid_and_privileges",
        _PROBE
        + """
import subprocess
probe("setuid 0", lambda: os.setuid(0))
probe("setgid 0", lambda: os.setgid(0))
probe("setgroups 0", lambda: os.setgroups([0]))
probe("seteuid 0", lambda: os.seteuid(0))
def su():
    out = subprocess.run(["su", "-c", "id -u", "root"], input=b"\\n", capture_output=True,
                         timeout=5)
    if out.stdout.strip() != b"0":
        raise PermissionError(1, "su failed")
probe("su", su)
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\\t" in line)
status = {k: v.strip() for k, v in status.items()
          if k in ("CapEff", "CapBnd", "CapPrm", "NoNewPrivs", "Seccomp")}
print(json.dumps({"euid": os.geteuid(), "egid": os.getegid(), "status": status,
                  "attempts": results}))
""",
        _privileges,
    ),
    Attack(
        "kill_or_stop_the_supervisor",
        """
        import errno, json, os, signal
        # The supervisor (PID 1, the parent) is another user: no signal of ours reaches it,
        # and kill(-1) reaches only this run's own processes.
        attempts = {}
        for name, target, sig in [
            ("kill 1", 1, signal.SIGKILL), ("stop 1", 1, signal.SIGSTOP),
            ("term parent", os.getppid(), signal.SIGTERM),
            ("hup parent", os.getppid(), signal.SIGHUP),
            ("kill group 1", -1, signal.SIGKILL),
        ]:
            try:
                os.kill(target, sig)
                attempts[name] = "ok"
            except OSError as exc:
                attempts[name] = errno.errorcode[exc.errno]
        print(json.dumps({"parent": os.getppid(), "attempts": attempts}))
        """,
        _supervisor_untouchable,
        verdict="accepted",
    ),
    Attack(
        "print_dev_urandom",
        "import shutil, sys\nshutil.copyfileobj(open('/dev/urandom', 'rb'), sys.stdout.buffer)",
        _capped(16384),
        {"output_bytes": 16384},
        verdict="output_limit",
    ),
    Attack(
        "read_dev_urandom_forever",
        "f = open('/dev/urandom', 'rb')\nwhile True:\n    f.read(1 << 20)",
        _timed_out,
        {"wall_time_ms": 1000},
        verdict="time_limit",
    ),
    Attack(
        "nul_and_invalid_utf8",
        "import sys\nsys.stdout.buffer.write(b'\\x00\\xff\\xfe\\x00\\xc0\\xafA\\n')",
        _raw_bytes,
    ),
    Attack(
        "exhaust_file_descriptors",
        """
        import errno, json
        files, error = [], None
        try:
            while True:
                files.append(open("/dev/null"))
        except OSError as exc:
            error = errno.errorcode.get(exc.errno)
        print(json.dumps({"opened": len(files), "error": error}))
        """,
        _open_files,
        {"open_files": 64},
    ),
    Attack(
        "flood_stdin_unread",
        "print('ignoring stdin')",
        _ignored_stdin,
        stdin=b"z" * (8 << 20),
    ),
]
