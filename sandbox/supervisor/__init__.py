"""The session supervisor: its binary, and the stream it reads and the records it writes.

``supervisor.c`` (next to this file) is PID 1 of a session sandbox; its header comment is the
protocol's reference. This module is the host's half: ``binary()`` builds (once) and returns
the static executable a backend delivers into the sandbox, ``session_start`` and ``step``
encode what the host writes, and ``RecordReader`` parses what the supervisor writes back.
Nothing here talks to an engine.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.contract import RunResult, Session
from sandbox.files import safe_relative
from sandbox.policy import SANDBOX_GID, SANDBOX_UID, Limits

SOURCE = Path(__file__).with_name("supervisor.c")
# Where ``binary()`` keeps what it built; images copy a prebuilt one to $SUPERVISOR_ENV.
BUILT = Path(__file__).with_name("evalplatform-supervisor")
SUPERVISOR_ENV = "EVALPLATFORM_SUPERVISOR"
CODE_DIR = "/sandbox/code"
BUILD_DIR = "/sandbox/build"
BIN_DIR = "/sandbox/bin"
# The loader: the one command a session sandbox starts with, as root. It copies exactly $1
# bytes of the stream (the supervisor) into a root-only tmpfs and becomes it; the rest of the
# stream is the supervisor's. Images need /bin/sh, GNU head and chmod; the supervisor makes
# its directory root's alone before anything else runs.
LOADER_EXIT = 125
LOADER_MESSAGE = "evalplatform: could not start the session supervisor"
LOADER = (
    f'head -c "$1" >{BIN_DIR}/supervisor && chmod 0500 {BIN_DIR}/supervisor'
    f' || {{ echo "{LOADER_MESSAGE}" >&2; exit {LOADER_EXIT}; }}; '
    f"exec {BIN_DIR}/supervisor"
)
# The capabilities the supervisor keeps: to become uid 65534 for each step, and to kill every
# process of a step. Nothing the program runs has any.
CAPABILITIES = ("SETUID", "SETGID", "KILL")
# Extra processes beside the program's: the supervisor and its clean-up helper.
EXTRA_PIDS = 2
# Memory the supervisor needs beyond a step's limit: itself, its tmpfs copy, and its buffers
# for one step's capped stdout and stderr.
SUPERVISOR_MEMORY_BYTES = 8 * 1024 * 1024

TIMED_OUT, OUT_OF_MEMORY, STDOUT_TRUNCATED, STDERR_TRUNCATED = 1, 2, 4, 8
_HEADER_LIMIT = 512
_RECORD = re.compile(
    rb"(?P<nonce>[0-9a-f]{1,64}) (?P<kind>[RX]) (?P<index>-?[0-9]{1,9}) (?P<exit>-?[0-9]{1,3}) "
    rb"(?P<signal>[0-9]{1,2}) (?P<wall>[0-9]{1,12}) (?P<cpu>[0-9]{1,12}) "
    rb"(?P<peak>[0-9]{1,20}) (?P<flags>[0-9]{1,2}) (?P<out>[0-9]{1,12}) (?P<err>[0-9]{1,12})\n"
)


class SupervisorUnavailable(Exception):
    """The supervisor binary is missing and cannot be built here."""


class ProtocolError(Exception):
    """The supervisor's stream broke the protocol: the session's results cannot be trusted."""


@functools.cache
def binary() -> bytes:
    """The static supervisor executable: ``$EVALPLATFORM_SUPERVISOR`` if set, else the copy
    built next to the source, built now with the C compiler when missing or stale."""
    configured = os.environ.get(SUPERVISOR_ENV)
    if configured:
        try:
            return Path(configured).read_bytes()
        except OSError as exc:
            raise SupervisorUnavailable(
                f"{SUPERVISOR_ENV}={configured} cannot be read: {exc}"
            ) from exc
    if not BUILT.exists() or BUILT.stat().st_mtime < SOURCE.stat().st_mtime:
        build(BUILT)
    return BUILT.read_bytes()


def build(target: Path) -> None:
    """Compile ``supervisor.c`` into a static executable at ``target`` (atomically), with
    musl when it is here (about 80 KB, small enough to travel in a Kubernetes ConfigMap),
    else with the C compiler and glibc (about 800 KB)."""
    compiler = shutil.which(os.environ.get("CC", "")) or shutil.which("musl-gcc")
    compiler = compiler or shutil.which("cc")
    if compiler is None:
        raise SupervisorUnavailable(
            "The session supervisor is not built and no C compiler is here: run "
            "`python -m sandbox.supervisor` where musl-tools (or gcc and libc6-dev) are "
            f"installed, or set {SUPERVISOR_ENV} to a built copy."
        )
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".supervisor-")
    os.close(fd)
    try:
        completed = subprocess.run(
            [compiler, "-static", "-Os", "-s", "-Wall", "-Werror", "-o", partial, str(SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode:
            raise SupervisorUnavailable(
                f"Building the session supervisor failed: {completed.stderr.strip()[-2000:]}"
            )
        os.chmod(partial, 0o755)  # noqa: S103  (an executable every user may run)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def session_problem(session: Session) -> str:
    """Why the supervisor cannot run ``session`` as given, or ``""``: what no backend can
    run (``Session.problem``), or a policy it does not follow (it runs every step as uid
    65534, in ``CODE_DIR``)."""
    problem = session.problem()
    if problem:
        return problem
    if session.policy.user != (SANDBOX_UID, SANDBOX_GID):
        return f"The session supervisor runs every step as uid {SANDBOX_UID}."
    if session.policy.code_dir != CODE_DIR:
        return f"The session supervisor keeps the code in {CODE_DIR}."
    return ""


def cpu_limit_ms(limits: Limits) -> int:
    """A step's CPU time limit: its own, else its wall time on every CPU it may use."""
    if limits.cpu_time_ms is not None:
        return limits.cpu_time_ms
    return math.ceil(limits.wall_time_ms * max(limits.cpus, 1.0))


def code_archive(files: Mapping[str, bytes]) -> bytes:
    """The code as the supervisor unpacks it: per file ``b"<name length> <size>\\n"``, the
    name (UTF-8) and the content. The supervisor writes it as root, files 0444, so the program
    can only read it. Names must be relative paths without ``..`` or empty parts; anything else
    raises ``ValueError``."""
    parts: list[bytes] = []
    for name, data in files.items():
        safe_relative(name)
        encoded = name.encode()
        parts += [b"%d %d\n" % (len(encoded), len(data)), encoded, data]
    return b"".join(parts)


def session_start(nonce: str, archive: bytes) -> bytes:
    """The stream's opening: the session's nonce, then the code archive."""
    return f"EVALPLATFORM-SESSION 1 {nonce}\nA {len(archive)}\n".encode() + archive


def step(kind: str, index: int, command: Sequence[str], limits: Limits, stdin: bytes) -> bytes:
    """One step: ``"K"`` (compile) or ``"C"`` (a case), its limits, command and input."""
    argv = b"".join(arg.encode() + b"\0" for arg in command)
    header = (
        f"{kind} {index} {limits.wall_time_ms} {cpu_limit_ms(limits)} {limits.memory_bytes} "
        f"{limits.output_bytes} {limits.file_size_mb * 1024 * 1024} {limits.open_files} "
        f"{len(argv)} {len(stdin)}\n"
    )
    return header.encode() + argv + stdin


END = b"Q\n"


@dataclass(frozen=True)
class Record:
    """One record from the supervisor: a step's result, or (``failed``) why it gave up."""

    index: int
    failed: bool
    result: RunResult

    @property
    def message(self) -> str:
        return self.result.stdout.decode(errors="replace")


class RecordReader:
    """Parses the supervisor's stdout as it arrives. Every record must carry ``nonce`` and
    no payload may exceed ``max_payload`` bytes; with ``line_ended`` (the unprivileged
    supervisor's records, read from a container log) a newline must follow each record.
    Anything else raises ``ProtocolError``."""

    def __init__(self, nonce: str, max_payload: int, *, line_ended: bool = False) -> None:
        self.nonce = nonce.encode()
        self.max_payload = max_payload
        self.ending = b"\n" if line_ended else b""
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Record]:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n", 0, _HEADER_LIMIT)
            if end < 0:
                if len(self._buffer) >= _HEADER_LIMIT:
                    raise ProtocolError("a record header is too long")
                return
            match = _RECORD.fullmatch(bytes(self._buffer[: end + 1]))
            if match is None or match["nonce"] != self.nonce:
                raise ProtocolError(
                    f"malformed record header: {bytes(self._buffer[: min(end, 120)])!r}"
                )
            out_length, err_length = int(match["out"]), int(match["err"])
            if max(out_length, err_length) > self.max_payload:
                raise ProtocolError("a record's payload exceeds the output limit")
            payload_end = end + 1 + out_length + err_length
            total = payload_end + len(self.ending)
            if len(self._buffer) < total:
                return
            if self._buffer[payload_end:total] != self.ending:
                raise ProtocolError("a record does not end its line")
            payload = bytes(self._buffer[end + 1 : payload_end])
            del self._buffer[:total]
            yield _record(match, payload[:out_length], payload[out_length:])

    @property
    def pending(self) -> int:
        """Bytes of a record not yet complete."""
        return len(self._buffer)


def _record(match: re.Match[bytes], stdout: bytes, stderr: bytes) -> Record:
    flags = int(match["flags"])
    exit_code, signal = int(match["exit"]), int(match["signal"])
    result = RunResult(
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=bool(flags & STDOUT_TRUNCATED),
        stderr_truncated=bool(flags & STDERR_TRUNCATED),
        timed_out=bool(flags & TIMED_OUT),
        oom_killed=bool(flags & OUT_OF_MEMORY),
        wall_time_ms=int(match["wall"]),
        cpu_time_ms=int(match["cpu"]),
        peak_memory_bytes=int(match["peak"]) or None,
    )
    if exit_code >= 0:
        result.record_exit(exit_code)
    elif signal:
        # As a shell reports it, so every backend agrees: 128 + N, and the signal.
        result.record_exit(128 + signal)
    return Record(index=int(match["index"]), failed=match["kind"] == b"X", result=result)
