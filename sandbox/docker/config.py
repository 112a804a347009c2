"""The container a session asks the engine for; no engine calls."""

from __future__ import annotations

from typing import Any

from sandbox import supervisor
from sandbox.contract import Session
from sandbox.policy import Limits

MANAGED_LABEL = "evalplatform.managed"
EXECUTION_LABEL = "evalplatform.execution"
MANAGED_FILTER = f"{MANAGED_LABEL}=1"
MIB = 1024 * 1024


# --- rendering: the only place a container's fields are chosen --------------------------------


def _memory_bytes(steps: list[Limits]) -> int:
    # The supervisor's own needs sit on top of the largest step's: it holds one step's capped
    # stdout and stderr at a time.
    memory = max(step.memory_bytes for step in steps)
    output = max(step.output_bytes for step in steps)
    return memory + supervisor.SUPERVISOR_MEMORY_BYTES + 2 * output


def case_memory_bytes(session: Session) -> int:
    """The sandbox's memory while the cases run: a compile step may need more than a case
    may use, so the host lowers the sandbox to this once the compile step is over."""
    return _memory_bytes([session.policy.limits])


def container_config_for(
    session: Session, *, supervisor_size: int, runtime: str = ""
) -> dict[str, Any]:
    """Return the ``POST /containers/create`` body for ``session``, in the Engine API's names.

    One container holds the whole session: the loader (``sandbox.supervisor.LOADER``) starts
    as root, takes the first ``supervisor_size`` bytes of the attach stream as the supervisor
    and becomes it; the supervisor keeps only the capabilities it needs to run each step as
    the policy's user (``sandbox.supervisor.CAPABILITIES``). Everything else comes from
    ``session.policy`` (and the catalogue's image); the optional ``runtime`` names an OCI
    runtime such as ``runsc`` and is overridden by the policy's ``runtime_class``. The body
    asks for stdin/stdout/stderr to be attachable and keeps no log on the host: the
    supervisor's records are read from the attach stream only.
    """
    policy = session.policy
    limits = policy.limits
    memory = _memory_bytes(
        [limits, session.compile.limits] if session.compile is not None else [limits]
    )
    labels = {**session.labels, MANAGED_LABEL: "1", EXECUTION_LABEL: str(session.execution_id)}
    file_size = limits.file_size_mb * MIB
    code_mb = limits.scratch_mb
    tmpfs = {
        # Memory-backed and charged to the sandbox's memory limit; nothing reaches the host's
        # disk. Scratch is emptied between cases; programs may not run files from it.
        policy.scratch_dir: f"rw,noexec,nosuid,nodev,size={limits.scratch_mb}m,mode=1777",
        # Root's: the program reads its code (and runs what a compile step built) but cannot
        # change it.
        supervisor.CODE_DIR: f"rw,exec,nosuid,nodev,size={code_mb}m,mode=0755",
        # Root's alone: the supervisor's copy of itself.
        supervisor.BIN_DIR: f"rw,exec,nosuid,nodev,size={supervisor_size // MIB + 2}m,mode=0700",
    }
    if session.compile is not None:
        # Root's, sticky and writable by all while the compile step works in a directory of
        # its own inside; the supervisor empties it and closes it (0555) before any case.
        tmpfs[supervisor.BUILD_DIR] = f"rw,exec,nosuid,nodev,size={code_mb}m,mode=1777"
    host_config: dict[str, Any] = {
        "NetworkMode": "bridge" if policy.network else "none",
        "ReadonlyRootfs": policy.read_only_root,
        "Tmpfs": tmpfs,
        "CapDrop": ["ALL"] if policy.drop_all_capabilities else [],
        "CapAdd": list(supervisor.CAPABILITIES),
        # Default seccomp applies because no seccomp option is given.
        "SecurityOpt": ["no-new-privileges:true"] if policy.no_new_privileges else [],
        "Privileged": False,
        "PidsLimit": limits.pids + supervisor.EXTRA_PIDS,
        "Memory": memory,
        "MemorySwap": memory,  # equal to Memory: no swap
        "NanoCpus": int(limits.cpus * 1_000_000_000),
        # The supervisor is PID 1 and reaps every process; no init of the engine's.
        "Init": False,
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
        "Image": session.image,
        # Entrypoint replaces the image's: the loader, which becomes the supervisor.
        "Entrypoint": ["/bin/sh", "-c", supervisor.LOADER, "evalplatform-loader"],
        "Cmd": [str(supervisor_size)],
        # Only the supervisor runs as root, and it runs no submitted code; every step runs
        # as policy.user.
        "User": "0:0",
        "WorkingDir": "/",
        "Env": [f"{key}={value}" for key, value in policy.environment.items()],
        "Labels": labels,
        "Hostname": "sandbox",
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "OpenStdin": True,
        "StdinOnce": True,
        "Tty": False,
        "NetworkDisabled": not policy.network,
        "HostConfig": host_config,
    }
