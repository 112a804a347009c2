"""The sandbox policy: one description of limits and hardening that every backend renders."""

from __future__ import annotations

from dataclasses import dataclass, field

# The sandbox user. It owns nothing in the image and is never root.
SANDBOX_UID = 65534
SANDBOX_GID = 65534


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandbox run, already checked against every cap."""

    wall_time_ms: int
    memory_mb: int
    output_bytes: int
    cpus: float = 1.0
    pids: int = 64
    scratch_mb: int = 16
    open_files: int = 64
    file_size_mb: int = 16
    # None: the wall time on every CPU the sandbox may use.
    cpu_time_ms: int | None = None

    @property
    def wall_time_s(self) -> float:
        return self.wall_time_ms / 1000

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024


@dataclass(frozen=True)
class SandboxPolicy:
    """Hardening every backend must apply. Backends translate it; they never weaken it.

    ``network`` is off unless an admin enabled it on the runtime. ``runtime_class`` names an
    optional stronger container runtime (gVisor's ``runsc``) when the operator installed one.
    """

    limits: Limits
    network: bool = False
    user: tuple[int, int] = (SANDBOX_UID, SANDBOX_GID)
    read_only_root: bool = True
    drop_all_capabilities: bool = True
    no_new_privileges: bool = True
    init_process: bool = True
    runtime_class: str = ""
    # Paths inside the sandbox: code is delivered read-only, scratch is a size-capped tmpfs.
    code_dir: str = "/sandbox/code"
    scratch_dir: str = "/tmp"  # noqa: S108  (a private tmpfs inside the sandbox)
    environment: dict[str, str] = field(
        default_factory=lambda: {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",  # noqa: S108
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
