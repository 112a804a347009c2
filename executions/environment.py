"""Facts about the machine the platform runs on: a container around it, a Docker socket.

A leaf module: the backend registry asks it whether to turn execution off, and the security
page and first-run advice explain the same facts. It imports nothing of the platform.
"""

from __future__ import annotations

import os
import socket
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


def docker_socket_path() -> str:
    """The unix socket the Docker SDK would use, or "" when DOCKER_HOST points elsewhere."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host.removeprefix("unix://") if host.startswith("unix://") else ""


def socket_reachable(path: str) -> bool:
    if not path:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            probe.connect(path)
    except OSError:
        return False
    return True
