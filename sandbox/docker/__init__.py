"""Run sessions as hardened Docker containers; the only package that talks to a Docker engine.

Every container is rendered from the session's ``SandboxPolicy`` by ``container_config_for``
(nothing else sets a container field). A session (``sandbox.docker.session``) goes:

1. take one of ``max_concurrent_per_node`` node-wide slots (flock'ed files in ``lock_dir``);
2. create one container for the whole execution (no network, read-only root, capped tmpfs
   for scratch, code and the supervisor, all capabilities dropped but the supervisor's
   SETUID, SETGID and KILL, no-new-privileges, default seccomp, pids/memory/cpu caps);
3. attach (stdin, stdout, stderr) before starting, start, and stream in the session
   supervisor (``sandbox.supervisor``), the code archive, then one step at a time: the
   compile step if any, then each case with its limits and stdin, each sent only once the
   observer accepted the previous result. The supervisor, PID 1, runs each step as uid 65534
   and writes back one framed record per step;
4. after the last record, let the supervisor exit, and remove the container, on every path.

Code delivery never touches the host: no bind mount, no volume on the host's disk, and the
engine (root on the host) never unpacks an archive. The code lives in memory, charged to the
sandbox's own memory limit, and is gone with the container.

Semantics callers rely on (per case; ``run`` is a session of one case):

* **Stdin** reaches the program through a pipe and ends with EOF; it never touches a disk.
  Runtime images need ``/bin/sh``, GNU ``head`` and ``chmod`` (Debian's and the official
  Python images have them). The host writes and reads in one ``select`` loop, and the
  supervisor does the same with the program, so a program that writes a lot before reading
  cannot deadlock either.
* **Output cap**: ``limits.output_bytes`` applies to stdout and to stderr *separately* (the
  result keeps one truncation flag per stream). The first ``output_bytes`` of each are kept;
  one byte more on either stream sets that stream's flag and ends the case. Output is raw
  bytes.
* **Time**: ``wall_time_ms`` is measured by the supervisor from the case's start to its
  exit; past the limit the case is killed and ``timed_out`` is set, as it is past the CPU
  time (``limits.cpu_time_ms``, else the wall time on every CPU allowed). ``cpu_time_ms`` is
  the sandbox cgroup's CPU time over the case.
* **Exit status**: a program killed by signal N reports ``exit_code`` 128 + N and
  ``signal`` N, as a shell does. Kills made by the supervisor (deadline, output cap) leave
  both unset. ``oom_killed`` is the memory cgroup's OOM kill count rising over the case.
* **Peak memory** is the case's resident-set high-water mark (``ru_maxrss``), measured by
  the supervisor, which the program cannot reach; it includes shared pages the memory limit
  does not count, so no verdict depends on it.
* **Cancel**: ``cancel(handle)`` force-removes the managed container named ``handle`` (the
  session's) from any process on any node that reaches the engine. The session that owned
  it reports ``error_kind=CANCELLED`` for the step it was in. The same applies to a container
  removed by ``remove_orphans`` or an operator. Cancelling a handle whose container does not
  exist yet is a no-op.
* **Concurrency**: at most ``max_concurrent_per_node`` sessions per node across all processes
  sharing ``lock_dir`` (django-q2 workers are processes). A session waits up to
  ``slot_wait_s`` for a slot, then fails with ``UNAVAILABLE``. Slots are released when the
  session returns or its process dies (the kernel drops flocks with the file descriptor).
* **Failures** of the infrastructure (engine unreachable, image missing, API error, proxy
  refusal, a supervisor that breaks the protocol or misses a deadline) are the result of the
  step they happened in (``RunResult.failure(UNAVAILABLE | BACKEND_ERROR, message)``);
  ``run_session`` never raises for them.
"""

from __future__ import annotations

from sandbox.docker.config import (
    EXECUTION_LABEL,
    MANAGED_FILTER,
    MANAGED_LABEL,
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
    "container_config_for",
]
