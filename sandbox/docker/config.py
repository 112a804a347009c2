"""The container a run asks the engine for, the code archive and the loader; no engine calls."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from typing import Any

from sandbox.contract import RunRequest
from sandbox.files import safe_relative

MANAGED_LABEL = "evalplatform.managed"
EXECUTION_LABEL = "evalplatform.execution"
MANAGED_FILTER = f"{MANAGED_LABEL}=1"
MIB = 1024 * 1024
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
