"""Run sandboxes as hardened Docker containers; the only module that talks to a Docker engine.

Every container is rendered from the request's ``SandboxPolicy`` by ``container_config_for``
(nothing else sets a container field). A run goes:

1. take one of ``max_concurrent_per_node`` node-wide slots (flock'ed files in ``lock_dir``);
2. create the container (no network, read-only root, capped tmpfs for scratch and for the
   code, uid 65534, no capabilities, no-new-privileges, default seccomp, pids/memory/cpu caps,
   tini as PID 1);
3. attach (stdin, stdout, stderr) before starting, start, and stream in a tar of the source
   files followed by the program's stdin; a loader (``/bin/sh``, ``head``, ``tar`` from the
   image) unpacks exactly the archive's bytes into the code tmpfs as uid 65534 and runs the
   catalogue's command, which inherits the rest of the stream as its stdin, then reports the
   sandbox's peak memory. Output is read with a byte cap until the stream ends, the cap is
   hit or the wall deadline passes;
4. inspect (exit code, OOM, timestamps; waiting first only if the process outlived its
   output stream) and force-remove the container, on every path.

Code delivery never touches the host: no bind mount, no volume on the host's disk, and the
engine (root on the host) never unpacks an archive. The code lives in memory, charged to the
sandbox's own memory limit, and is gone with the container.

Semantics callers rely on:

* **Stdin** is streamed over the attach connection after the code archive and then
  half-closed, so the program sees a real pipe and EOF; stdin never touches a disk. Runtime
  images need ``/bin/sh`` and GNU ``head`` and ``tar`` (Debian's and the official Python
  images have them); ``head -c`` reads exactly the archive, never the program's input. Writes and
  reads are interleaved in one ``select`` loop, so a program that writes a lot before reading
  cannot deadlock the runner.
* **Output cap**: ``limits.output_bytes`` applies to stdout and to stderr *separately* (the
  result keeps one truncation flag per stream). The first ``output_bytes`` of each are kept;
  one byte more on either stream sets that stream's flag, and the sandbox is killed (on
  stderr once it also passes the room kept for the loader's memory report). Memory held per
  run is bounded by about ``2 * output_bytes``. Output is raw bytes.
* **Time**: the deadline is ``wall_time_ms`` after ``start`` returns; past it the container is
  killed and ``timed_out`` is set. ``wall_time_ms`` in the result is the engine's
  StartedAt→FinishedAt when the program ended by itself, else the runner's clock; a program
  that ended by itself but took longer than its wall time is still marked ``timed_out`` (by
  ``ExecutionBackend.run``).
* **Exit status**: ``exit_code`` is the container's status. With tini as PID 1 a program
  killed by signal N exits ``128 + N``; such codes also set ``signal = N`` (a program that
  calls ``exit(137)`` is indistinguishable, as in a shell). Kills made by the runner (deadline,
  output cap) leave ``exit_code`` and ``signal`` unset. ``oom_killed`` is the engine's
  ``State.OOMKilled``.
* **Peak memory**: the engine forgets a container's cgroup when it exits, so the loader
  reads the high-water mark of the sandbox's memory cgroup itself once the program has
  ended (``memory.peak`` on cgroup v2, ``memory.max_usage_in_bytes`` on v1: the figure the
  memory limit is enforced against, page cache and tmpfs included) and writes it after the
  program's stderr behind a per-run mark sent on stdin, which the program never sees there.
  The runner strips that line; ``peak_memory_bytes`` is None when it is missing (the
  runner killed the sandbox, or the program killed the loader). The program runs as the
  same uid as the loader, so it could forge its own figure: the number is informational
  and decides no verdict (the memory limit is judged by the engine's OOM flag).
* **Cancel**: ``cancel(handle)`` force-removes the managed container named ``handle`` from any
  process on any node that reaches the engine. The engine marks a container "removing"
  before killing it, so the run that owned it can tell a cancel from a crash: it returns
  ``error_kind=CANCELLED`` with whatever output it had read. The same applies to a container
  removed by ``remove_orphans`` or an operator. Cancelling a handle whose container does not
  exist yet is a no-op.
* **Concurrency**: at most ``max_concurrent_per_node`` runs per node across all processes
  sharing ``lock_dir`` (django-q2 workers are processes). A run waits up to ``slot_wait_s`` for a
  slot, then fails with ``UNAVAILABLE``. Slots are released when the run returns or its
  process dies (the kernel drops flocks with the file descriptor).
* **Failures** of the infrastructure (engine unreachable, image missing, API error, proxy
  refusal) come back as ``RunResult.failure(UNAVAILABLE | BACKEND_ERROR, message)``; ``run``
  never raises for them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import io
import logging
import os
import random
import re
import secrets
import select
import socket
import stat
import struct
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import requests

from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
)
from sandbox.files import safe_relative
from sandbox.options import at_least

logger = logging.getLogger(__name__)

MANAGED_LABEL = "evalplatform.managed"
EXECUTION_LABEL = "evalplatform.execution"
MANAGED_FILTER = f"{MANAGED_LABEL}=1"
DEFAULT_BASE_URL = "unix:///var/run/docker.sock"
# Shared by every worker on the node; SlotPool refuses it unless this user owns it.
DEFAULT_LOCK_DIR = "/tmp/evalplatform-docker-slots"  # noqa: S108
MIB = 1024 * 1024

# Docker's attach stream frame header: stream id (1 = stdout, 2 = stderr), 3 pad bytes, size.
_FRAME_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2
_CHUNK = 64 * 1024
# The loader that runs first in every sandbox, as uid 65534: read the run's mark (the first
# line of the stream), unpack exactly $1 bytes of the stream into the working directory (the
# code tmpfs, which the engine may have given the image's mode for that path, hence the
# chmod), run the catalogue's command, then write the mark and the memory cgroup's peak
# after the program's stderr and exit with the program's status. A failed unpack exits with
# a status and message of its own so it is not taken for the program's runtime error.
# The shell's own stderr goes to /dev/null while the program runs (the program gets the
# real one as fd 2, in the subshell only), so no "Killed" or "Segmentation fault" notice
# of the shell's is mistaken for the program's output.
LOADER_EXIT = 125
LOADER_MESSAGE = b"evalplatform: could not unpack the submitted code"
LOADER = (
    "IFS= read -r mark; "
    'chmod 0700 . && head -c "$1" | tar -x -m -f -'
    f' || {{ echo "{LOADER_MESSAGE.decode()}" >&2; exit {LOADER_EXIT}; }}; '
    'shift; exec 3>&2 2>/dev/null; (exec "$@" 2>&3 3>&-); status=$?; '
    "{ read -r peak </sys/fs/cgroup/memory.peak"
    " || read -r peak </sys/fs/cgroup/memory/memory.max_usage_in_bytes; }; "
    'printf \'%s%s\\n\' "$mark" "$peak" >&3; exit $status'
)
# The loader's report: the mark, at most 20 digits and a newline, at the very end of stderr.
_MARK_PREFIX = "evalplatform-peak-"
_MARK_BYTES = 16
_REPORT_ROOM = len(_MARK_PREFIX) + 2 * _MARK_BYTES + 1 + 20 + 1


class DockerUnavailable(Exception):
    """The engine could not be reached or answered in a way that means it is not usable."""


class ImageBuildError(Exception):
    """Building or importing a runtime image failed; ``log`` holds the build output so far."""

    def __init__(self, message: str, log: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.log = list(log)


class SlotsBusy(Exception):
    """No concurrency slot became free within the wait."""


class _Cancelled(Exception):
    pass


# --- rendering: the only place a container's fields are chosen --------------------------------


def container_config_for(
    request: RunRequest, *, archive_size: int, runtime: str = ""
) -> dict[str, Any]:
    """Return the ``POST /containers/create`` body for ``request``, in the Engine API's names.

    Everything comes from ``request.policy`` (and the catalogue's image and command); the
    optional ``runtime`` names an OCI runtime such as ``runsc`` and is overridden by the
    policy's ``runtime_class``. ``archive_size`` is the length of the code archive that
    precedes stdin on the attach stream. The body asks for stdin/stdout/stderr to be
    attachable and keeps no log on the host: output is read from the attach stream only.
    """
    policy = request.policy
    limits = policy.limits
    uid, gid = policy.user
    command = list(request.command)
    labels = {**request.labels, MANAGED_LABEL: "1", EXECUTION_LABEL: str(request.execution_id)}
    file_size = limits.file_size_mb * MIB
    host_config: dict[str, Any] = {
        "NetworkMode": "bridge" if policy.network else "none",
        "ReadonlyRootfs": policy.read_only_root,
        # Memory-backed and charged to the sandbox's memory limit; nothing reaches the
        # host's disk. The code directory belongs to the sandbox user, who unpacks into it.
        "Tmpfs": {
            policy.scratch_dir: f"rw,noexec,nosuid,nodev,size={limits.scratch_mb}m,mode=1777",
            policy.code_dir: (
                f"rw,noexec,nosuid,nodev,size={limits.scratch_mb}m,uid={uid},gid={gid},mode=0700"
            ),
        },
        "CapDrop": ["ALL"] if policy.drop_all_capabilities else [],
        # Default seccomp applies because no seccomp option is given.
        "SecurityOpt": ["no-new-privileges:true"] if policy.no_new_privileges else [],
        "Privileged": False,
        "PidsLimit": limits.pids,
        "Memory": limits.memory_bytes,
        "MemorySwap": limits.memory_bytes,  # equal to Memory: no swap
        "NanoCpus": int(limits.cpus * 1_000_000_000),
        "Init": policy.init_process,
        "Ulimits": [
            {"Name": "fsize", "Soft": file_size, "Hard": file_size},
            {"Name": "nofile", "Soft": limits.open_files, "Hard": limits.open_files},
            # A crash must not hand a core to the host's core_pattern handler.
            {"Name": "core", "Soft": 0, "Hard": 0},
        ],
        # /dev/shm is tmpfs charged to the memory cgroup; cap it like scratch.
        "ShmSize": limits.scratch_mb * MIB,
        "IpcMode": "private",
        "LogConfig": {"Type": "none", "Config": {}},
    }
    runtime = policy.runtime_class or runtime
    if runtime:
        host_config["Runtime"] = runtime
    return {
        "Image": request.image,
        # Entrypoint replaces the image's: the loader, then exactly the catalogue's command.
        "Entrypoint": ["/bin/sh", "-c", LOADER, "evalplatform-loader"],
        "Cmd": [str(archive_size), *command],
        "User": f"{uid}:{gid}",
        "WorkingDir": policy.code_dir,
        "Env": [f"{key}={value}" for key, value in policy.environment.items()],
        "Labels": labels,
        "Hostname": "sandbox",
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "OpenStdin": True,
        "StdinOnce": True,  # our half-close becomes the program's EOF
        "Tty": False,
        "NetworkDisabled": not policy.network,
        "HostConfig": host_config,
    }


def code_archive(files: Mapping[str, bytes]) -> bytes:
    """Return a tar of ``files`` for the loader to unpack into the code directory.

    Files are 0444 and directories 0555: the program reads its code and has no reason to
    change it (it could, being their owner, but only inside its own throw-away sandbox).
    Names must be relative paths without ``..`` or empty parts; anything else raises
    ``ValueError``.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()
        for name, data in sorted(files.items()):
            path = safe_relative(name)
            for parent in reversed(path.parents[:-1]):
                if str(parent) not in made:
                    made.add(str(parent))
                    tar.addfile(_tar_entry(str(parent), tarfile.DIRTYPE, 0o555))
            info = _tar_entry(str(path), tarfile.REGTYPE, 0o444)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tar_entry(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


# --- output: demultiplex the attach stream with a byte cap ---------------------------------


@dataclass
class _CappedStreams:
    """Demultiplexes Docker attach frames, keeping at most ``cap`` bytes per stream (plus
    ``stderr_room`` on stderr, where the loader's report follows the program's output)."""

    cap: int
    stderr_room: int = 0
    out: dict[int, bytearray] = field(
        default_factory=lambda: {_STDOUT: bytearray(), _STDERR: bytearray()}
    )
    truncated: dict[int, bool] = field(default_factory=lambda: {_STDOUT: False, _STDERR: False})
    _header: bytearray = field(default_factory=bytearray)
    _stream: int = 0
    _left: int = 0  # payload bytes still due for the current frame

    def feed(self, data: bytes) -> bool:
        """Consume ``data``; return True once either stream went over the cap."""
        view = memoryview(data)
        while view:
            if not self._left:
                need = _FRAME_HEADER.size - len(self._header)
                self._header += view[:need]
                view = view[need:]
                if len(self._header) == _FRAME_HEADER.size:
                    self._stream, self._left = _FRAME_HEADER.unpack(self._header)
                    self._header.clear()
                continue
            chunk, view = view[: self._left], view[self._left :]
            self._left -= len(chunk)
            # Stream 0 (stdin echo) never comes without a TTY; fold anything odd into stdout.
            target = _STDERR if self._stream == _STDERR else _STDOUT
            buf = self.out[target]
            room = self.cap + (self.stderr_room if target == _STDERR else 0) - len(buf)
            buf += chunk[:room]
            if len(chunk) > room:
                self.truncated[target] = True
                return True
        return False

    def take_stderr(self, mark: bytes) -> tuple[bytes, bool, int | None]:
        """The program's stderr, capped, its truncation flag, and the peak memory the loader
        reported after it (None when the report is not the stream's last line)."""
        stderr, peak = bytes(self.out[_STDERR]), None
        report = re.search(re.escape(mark) + rb"([0-9]{1,20})?\n\Z", stderr)
        if report:
            stderr = stderr[: report.start()]
            peak = int(report.group(1)) if report.group(1) else None
        truncated = self.truncated[_STDERR] or len(stderr) > self.cap
        return stderr[: self.cap], truncated, peak


# --- node-wide concurrency slots ---------------------------------------------------------------


class SlotPool:
    """``size`` slots shared by every process on this node that uses ``directory``.

    A slot is an exclusive ``flock`` on ``directory/slot-N``: the kernel releases it when the
    holder closes the descriptor or dies, so a crashed worker never leaks a slot.
    """

    def __init__(self, directory: str, size: int) -> None:
        if size < 1:
            raise ValueError("a slot pool needs at least one slot")
        self.directory = directory
        self.size = size

    @contextlib.contextmanager
    def acquire(self, wait_s: float) -> Iterator[int]:
        """Hold a free slot for the ``with`` block; raise ``SlotsBusy`` after ``wait_s``."""
        self._ensure_directory()
        deadline = time.monotonic() + wait_s
        while True:
            # Start at a random slot so that waiters do not all pile on slot 0.
            first = random.randrange(self.size)  # noqa: S311 (load spreading, not secrecy)
            for n in range(self.size):
                index = (first + n) % self.size
                fd = os.open(
                    os.path.join(self.directory, f"slot-{index}"),
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield index
                finally:
                    os.close(fd)  # closing drops the flock
                return
            if time.monotonic() >= deadline:
                raise SlotsBusy
            time.sleep(0.05)

    def _ensure_directory(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        info = os.lstat(self.directory)
        # In a shared /tmp another user could pre-create the directory or a symlink to it.
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise OSError(
                errno.EPERM, "slot directory is not a directory owned by this user", self.directory
            )


# --- the backend -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerOptions:
    """The Docker backend's options and their defaults."""

    # The engine's URL: a unix socket, or tcp://host:port of a socket proxy. Empty means the
    # Docker SDK's own environment (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), else
    # the local socket.
    base_url: str = ""
    # An OCI runtime for the sandboxes, e.g. runsc (gVisor); empty is the engine's default.
    runtime: str = ""
    # Runs at once on this node, across every process sharing lock_dir.
    max_concurrent_per_node: int = 4
    # Seconds to wait for a program's exit after its output stream ended.
    grace_s: float = 2.0
    lock_dir: str = DEFAULT_LOCK_DIR
    # Seconds a run waits for a free slot before it fails as UNAVAILABLE.
    slot_wait_s: float = 30.0
    api_timeout_s: float = 60.0
    # The runtime images health() checks.
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        at_least("max_concurrent_per_node", self.max_concurrent_per_node, 1)


class DockerBackend(ExecutionBackend):
    """Runs each request in a fresh, hardened container on a Docker engine.

    Options: ``DockerOptions``. See the module docstring for the semantics of a run.
    """

    name = "docker"
    options_class = DockerOptions
    options: DockerOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.slot_wait_s = self.options.slot_wait_s
        self._client_kwargs: dict[str, Any] = {"base_url": self.options.base_url}
        self._environment_error: docker.errors.DockerException | None = None
        if not self.options.base_url:
            try:
                self._client_kwargs = docker.utils.kwargs_from_env()
            except docker.errors.DockerException as exc:
                self._client_kwargs, self._environment_error = {}, exc
            self._client_kwargs.setdefault("base_url", DEFAULT_BASE_URL)
        self.base_url: str = self._client_kwargs["base_url"]
        self.slots = SlotPool(self.options.lock_dir, self.options.max_concurrent_per_node)
        # requests sessions are not documented as thread-safe: one client per thread.
        self._local = threading.local()

    # -- engine access

    def api(self) -> Any:
        """Return this thread's low-level ``docker.APIClient``; raise ``DockerUnavailable``."""
        client = getattr(self._local, "client", None)
        if client is None:
            error = self._environment_error
            if error is None:
                try:
                    client = docker.APIClient(
                        version="auto", timeout=self.options.api_timeout_s, **self._client_kwargs
                    )
                except docker.errors.DockerException as exc:
                    error = exc
            if error is not None:
                raise DockerUnavailable(
                    f"Docker engine at {self.base_url} is unreachable: {error}"
                ) from error
            self._local.client = client
        return client

    # -- the contract

    def _run(self, request: RunRequest) -> RunResult:
        try:
            api = self.api()
            with self.slots.acquire(self.options.slot_wait_s):
                return self._run_container(api, request)
        except DockerUnavailable as exc:
            return RunResult.failure(ErrorKind.UNAVAILABLE, str(exc), handle=request.handle)
        except SlotsBusy:
            return RunResult.failure(
                ErrorKind.UNAVAILABLE,
                f"All {self.options.max_concurrent_per_node} sandbox slots on this node stayed "
                f"busy for {self.options.slot_wait_s:g} s; retry later or raise "
                "max_concurrent_per_node.",
                handle=request.handle,
            )

    def _run_container(self, api: Any, request: RunRequest) -> RunResult:
        archive = code_archive(request.files)
        container_id = ""
        attach: Any = None
        streams = _CappedStreams(cap=request.limits.output_bytes, stderr_room=_REPORT_ROOM)
        mark = f"{_MARK_PREFIX}{secrets.token_hex(_MARK_BYTES)}=".encode()
        result = RunResult(handle=request.handle)
        try:
            try:
                config = container_config_for(
                    request, archive_size=len(archive), runtime=self.options.runtime
                )
                container_id = api.create_container_from_config(config, name=request.handle)["Id"]
            except docker.errors.ImageNotFound:
                return RunResult.failure(
                    ErrorKind.BACKEND_ERROR,
                    f"Runtime image {request.image!r} is not on the Docker engine; build it "
                    "with executions.runtime_images (manage.py build_runtime_image).",
                    handle=request.handle,
                )
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    return RunResult.failure(
                        ErrorKind.BACKEND_ERROR,
                        f"A sandbox named {request.handle!r} already exists on the engine.",
                        handle=request.handle,
                    )
                raise
            # Attach before start: nothing the program writes can be missed, and no output is
            # in flight while the HTTP upgrade is read.
            attach = api.attach_socket(
                container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            api.start(container_id)
            started = time.monotonic()
            deadline = started + request.limits.wall_time_s
            stream = mark + b"\n" + archive + request.stdin
            ending = _pump(_raw_socket(attach), stream, streams, deadline)
            if ending == "eof":
                self._collect_exit(api, container_id, request, started, result)
                if result.exit_code == LOADER_EXIT and LOADER_MESSAGE in streams.out[_STDERR]:
                    return RunResult.failure(
                        ErrorKind.BACKEND_ERROR,
                        f"The runtime image {request.image!r} could not unpack the code: it "
                        "needs /bin/sh, GNU head and tar. "
                        + bytes(streams.out[_STDERR]).decode(errors="replace")[-500:],
                        handle=request.handle,
                    )
            else:  # the container is killed by the removal below
                result.timed_out = ending == "deadline"
                result.wall_time_ms = int((time.monotonic() - started) * 1000)
        except (_Cancelled, docker.errors.NotFound) as exc:
            if not container_id:
                return _api_failure(exc, request.handle)
            # Only a cancel, the janitor or an operator removes a container we created.
            result.error_kind = ErrorKind.CANCELLED
            result.error_message = "The sandbox was stopped and removed before it finished."
        except docker.errors.APIError as exc:
            return _api_failure(exc, request.handle)
        except requests.exceptions.RequestException as exc:
            return RunResult.failure(
                ErrorKind.UNAVAILABLE,
                f"Lost the Docker engine at {self.base_url} during the run: {exc}",
                handle=request.handle,
            )
        finally:
            if attach is not None:
                _close_quietly(attach)
            if container_id:
                self._remove(api, container_id)
        result.stdout = bytes(streams.out[_STDOUT])
        result.stdout_truncated = streams.truncated[_STDOUT]
        result.stderr, result.stderr_truncated, result.peak_memory_bytes = streams.take_stderr(mark)
        return result

    def _collect_exit(
        self,
        api: Any,
        container_id: str,
        request: RunRequest,
        started: float,
        result: RunResult,
    ) -> None:
        """Fill exit facts after the output stream ended; raise ``_Cancelled`` if removed."""
        # The engine normally records the exit before it ends the stream, so one inspect
        # suffices. The stream can also end while the process lives on (it closed stdout and
        # stderr): then wait for the exit, until the deadline plus the grace.
        state = api.inspect_container(container_id)["State"]
        if state.get("Running"):
            deadline = started + request.limits.wall_time_s
            try:
                api.wait(
                    container_id, timeout=max(deadline - time.monotonic(), 0) + self.options.grace_s
                )
            except requests.exceptions.ReadTimeout:
                result.timed_out = True
                result.wall_time_ms = int((time.monotonic() - started) * 1000)
                return
            state = api.inspect_container(container_id)["State"]
        if state.get("Status") in ("removing", "dead"):
            raise _Cancelled
        code = int(state.get("ExitCode", -1))
        result.record_exit(code)
        result.oom_killed = bool(state.get("OOMKilled"))
        engine_ms = _elapsed_ms(state.get("StartedAt"), state.get("FinishedAt"))
        if engine_ms is None:
            engine_ms = int((time.monotonic() - started) * 1000)
        result.wall_time_ms = engine_ms

    def _remove(self, api: Any, container_id: str) -> None:
        """Kill and delete the container and its anonymous volume; never raise."""
        try:
            api.remove_container(container_id, v=True, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # 409: a cancel is already removing it.
            if exc.status_code != 409:
                logger.warning("could not remove container %s: %s", container_id, exc)
        except Exception as exc:
            # Left for remove_orphans; the run's result stands.
            logger.warning("could not remove container %s: %s", container_id, exc)

    def cancel(self, handle: str) -> None:
        """Kill and remove the managed container named ``handle``; unknown handles are ignored.

        Raises ``DockerUnavailable`` when the engine cannot be reached, so the caller knows
        the cancel did not happen.
        """
        api = self.api()
        try:
            info = api.inspect_container(handle)
            if info.get("Config", {}).get("Labels", {}).get(MANAGED_LABEL) != "1":
                logger.warning("refusing to cancel unmanaged container %r", handle)
                return
            api.remove_container(info["Id"], v=True, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: already being removed
                raise
        except requests.exceptions.RequestException as exc:
            raise DockerUnavailable(f"Docker engine at {self.base_url}: {exc}") from exc

    def health(self, images: Sequence[str] | None = None) -> Health:
        """Ping the engine and report its version, the given images and running sandboxes.

        ``images`` defaults to the ``images`` option. ``ok`` is False when the engine is
        unreachable or an image is missing.
        """
        wanted = list(self.options.images if images is None else images)
        capacity = self.options.max_concurrent_per_node
        try:
            api = self.api()
            api.ping()
            version = api.version()
            present = {image: _image_exists(api, image) for image in wanted}
            running = api.containers(filters={"label": MANAGED_FILTER, "status": "running"})
        except DockerUnavailable as exc:
            return Health(ok=False, detail=str(exc), capacity=capacity)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            return Health(
                ok=False,
                detail=f"Docker engine at {self.base_url} did not answer: {exc}",
                capacity=capacity,
            )
        missing = [image for image, ok in present.items() if not ok]
        detail = (
            f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}) "
            f"at {self.base_url}; {len(running)} of {capacity} sandboxes running."
        )
        if missing:
            detail += " Missing runtime images: " + ", ".join(missing) + "."
        return Health(
            ok=not missing,
            detail=detail,
            version=str(version.get("Version", "")),
            capacity=capacity,
            in_use=len(running),
            extra={
                "base_url": self.base_url,
                "api_version": str(version.get("ApiVersion", "")),
                "runtime": self.options.runtime or "default (runc)",
                "images": present,
            },
        )

    def admits_forbidden_call(self) -> bool | None:
        """Does the engine endpoint answer ``GET /info``, a call the backend never makes?

        Through the socket proxy the answer must be False (403). True means a raw socket or a
        proxy that is not an allow-list; None means the endpoint did not answer.
        """
        try:
            self.api().info()
        except docker.errors.APIError as exc:
            if exc.status_code == 403:
                return False
            return None
        except (DockerUnavailable, docker.errors.DockerException, requests.RequestException):
            return None
        return True

    def describe(self) -> Isolation:
        return Isolation(
            facts={
                "Docker engine": self.base_url,
                "OCI runtime": self.options.runtime or "runc (the engine's default)",
                "sandboxes at once on this node": str(self.options.max_concurrent_per_node),
            }
        )

    def remove_orphans(self, older_than_s: float = 900.0) -> int:
        """Remove managed containers (and their volumes) created over ``older_than_s`` ago.

        For a worker that crashed mid-run. ``older_than_s`` must exceed the longest run
        (wall-time cap plus grace plus slot wait) or live runs are cut short. Returns how
        many containers were removed; raises ``DockerUnavailable`` if the engine is down.
        """
        api = self.api()
        try:
            containers = api.containers(all=True, filters={"label": MANAGED_FILTER})
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailable(f"Docker engine at {self.base_url}: {exc}") from exc
        cutoff = time.time() - older_than_s
        removed = 0
        for container in containers:
            if container.get("Created", 0) < cutoff:
                try:
                    api.remove_container(container["Id"], v=True, force=True)
                    removed += 1
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    logger.warning("could not remove orphan %s: %s", container["Id"], exc)
        return removed

    # -- used by executions.runtime_images; image building never goes through the proxy

    def image_exists(self, image: str) -> bool:
        return _image_exists(self.api(), image)

    def build_image(self, context_dir: str, tag: str, *, pull: bool = True) -> list[str]:
        """``docker build`` ``context_dir`` as ``tag``; return the build log lines.

        Raises ``ImageBuildError`` (with the log so far) or ``DockerUnavailable``.
        """
        log: list[str] = []
        try:
            for chunk in self.api().build(
                path=context_dir, tag=tag, pull=pull, rm=True, forcerm=True, decode=True
            ):
                if "error" in chunk:
                    raise ImageBuildError(str(chunk["error"]).strip(), log)
                if chunk.get("stream"):
                    log.append(chunk["stream"].rstrip("\n"))
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ImageBuildError(f"docker build of {tag} failed: {exc}", log) from exc
        return log

    def import_rootfs(self, tarball: str, tag: str, changes: Sequence[str]) -> str:
        """``docker import`` a root filesystem tarball as ``tag``; return the new image id.

        ``changes`` are Dockerfile instructions (CMD, USER, WORKDIR, ENV) applied on import.
        Raises ``ImageBuildError`` or ``DockerUnavailable``.
        """
        repository, _, version = tag.rpartition(":")
        if not repository or "/" in version:
            repository, version = tag, "latest"
        try:
            self.api().import_image(
                src=tarball, repository=repository, tag=version, changes=list(changes)
            )
            return str(self.api().inspect_image(tag)["Id"])
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ImageBuildError(f"docker import of {tag} failed: {exc}") from exc


# --- helpers -----------------------------------------------------------------------------------


def _pump(sock: socket.socket, stdin: bytes, streams: _CappedStreams, deadline: float) -> str:
    """Feed ``stdin`` and read output until EOF, the cap or ``deadline``.

    Returns ``"eof"``, ``"capped"`` or ``"deadline"``. One loop does both directions so a
    program that fills its output pipe before reading stdin cannot deadlock us.
    """
    sock.setblocking(False)
    pending = memoryview(stdin)
    writing = True
    if not pending:
        writing = _shut_write(sock)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "deadline"
        readable, writable, _ = select.select([sock], [sock] if writing else [], [], remaining)
        if writable:
            try:
                sent = sock.send(pending[:_CHUNK])
            except BlockingIOError:
                sent = 0
            except OSError:
                # The program exited or closed stdin; what it wrote still matters.
                sent, pending = 0, memoryview(b"")
            pending = pending[sent:]
            if not pending:
                writing = _shut_write(sock)
        if readable:
            try:
                data = sock.recv(_CHUNK)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return "eof"
            if not data:
                return "eof"
            if streams.feed(data):
                return "capped"


def _shut_write(sock: socket.socket) -> bool:
    """Half-close: with StdinOnce the engine turns this into EOF on the program's stdin."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    return False


def _raw_socket(attached: Any) -> socket.socket:
    """The socket under docker-py's attach object (a SocketIO for unix and tcp URLs)."""
    if isinstance(attached, socket.socket):
        return attached
    inner = getattr(attached, "_sock", None)
    if isinstance(inner, socket.socket):
        return inner
    raise TypeError(f"cannot stream over {type(attached).__name__}")


def _close_quietly(attached: Any) -> None:
    """Tear the attach connection down for real.

    Closing docker-py's wrapper is not enough: the HTTP response still references the socket,
    and while the engine blocks writing output nobody reads, it cannot finish killing and
    removing the container. ``shutdown`` ends the connection whatever else holds the socket.
    """
    with contextlib.suppress(Exception):
        sock = _raw_socket(attached)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    with contextlib.suppress(Exception):
        attached.close()
    response = getattr(attached, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()


def _image_exists(api: Any, image: str) -> bool:
    try:
        api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.NotFound:
        return False
    return True


def _api_failure(exc: Any, handle: str) -> RunResult:
    status = getattr(exc, "status_code", None)
    explanation = getattr(exc, "explanation", None) or str(exc)
    if status == 403:
        message = f"The Docker socket proxy refused a call the backend needs: {explanation}"
    else:
        message = f"Docker API error ({status}): {explanation}"
    return RunResult.failure(ErrorKind.BACKEND_ERROR, message, handle=handle)


def _parse_time(value: str | None) -> dt.datetime | None:
    """Parse the engine's RFC 3339 timestamps, which carry nanoseconds Python cannot."""
    if not value or value.startswith("0001-"):
        return None
    try:
        main, _, rest = value.partition(".")
        fraction = "".join(c for c in rest if c.isdigit())[:6].ljust(6, "0")
        stamp = dt.datetime.strptime(main.rstrip("Z"), "%Y-%m-%dT%H:%M:%S")
        return stamp.replace(microsecond=int(fraction), tzinfo=dt.UTC)
    except ValueError:
        return None


def _elapsed_ms(started: str | None, finished: str | None) -> int | None:
    start, end = _parse_time(started), _parse_time(finished)
    if start is None or end is None or end < start:
        return None
    return int((end - start).total_seconds() * 1000)
