"""Facts about where the platform runs, used to choose a backend and to explain the choice."""

from __future__ import annotations

import os
from pathlib import Path

# Runtimes leave these markers; cgroup paths name the container manager.
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")
CGROUP_HINTS = ("docker", "kubepods", "containerd", "libpod", "lxc", "garden")


def container_evidence(
    root: Path = Path("/"), environ: os._Environ[str] | dict[str, str] | None = None
) -> str:
    """Why we believe the platform runs in a container, or "" when nothing says so."""
    environ = os.environ if environ is None else environ
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return "KUBERNETES_SERVICE_HOST is set"
    for marker in CONTAINER_MARKERS:
        if (root / marker.lstrip("/")).exists():
            return f"{marker} exists"
    try:
        cgroup = (root / "proc/1/cgroup").read_text()
    except OSError:
        cgroup = ""
    for line in cgroup.splitlines():
        path = line.rsplit(":", 1)[-1]
        for hint in CGROUP_HINTS:
            if hint in path:
                return f"/proc/1/cgroup mentions {hint}"
    return ""
