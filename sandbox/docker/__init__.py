"""Run sandboxes as hardened Docker containers; the only package that talks to a Docker engine.

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

from sandbox.docker.config import (
    EXECUTION_LABEL,
    MANAGED_FILTER,
    MANAGED_LABEL,
    code_archive,
    container_config_for,
)
from sandbox.docker.runner import (
    DEFAULT_BASE_URL,
    DockerBackend,
    DockerOptions,
    DockerUnavailable,
    ImageBuildError,
)
from sandbox.docker.slots import DEFAULT_LOCK_DIR, SlotPool, SlotsBusy

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_LOCK_DIR",
    "EXECUTION_LABEL",
    "MANAGED_FILTER",
    "MANAGED_LABEL",
    "DockerBackend",
    "DockerOptions",
    "DockerUnavailable",
    "ImageBuildError",
    "SlotPool",
    "SlotsBusy",
    "code_archive",
    "container_config_for",
]
