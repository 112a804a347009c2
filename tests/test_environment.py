"""Where the platform runs: the evidence of a container that turns execution off, and the
Docker socket the first-run advice and the posture checks look for."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from executions.environment import container_evidence, docker_socket_path, socket_reachable


@pytest.fixture
def bare_root(tmp_path: Path) -> Path:
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "proc/1/cgroup").write_text("0::/\n1:cpu:/\n")
    return tmp_path


def test_no_evidence_on_a_bare_host(bare_root: Path) -> None:
    assert container_evidence(bare_root, {}) == ""


@pytest.mark.parametrize("marker", [".dockerenv", "run/.containerenv"])
def test_container_marker_files(bare_root: Path, marker: str) -> None:
    (bare_root / marker).parent.mkdir(parents=True, exist_ok=True)
    (bare_root / marker).touch()
    assert marker.split("/")[-1] in container_evidence(bare_root, {})


@pytest.mark.parametrize(
    "line",
    [
        "12:memory:/docker/3f1a2b",
        "0::/kubepods/besteffort/pod1234/abcd",
        "0::/system.slice/containerd.service",
        "0::/machine.slice/libpod-1234.scope",
    ],
)
def test_cgroup_hints(bare_root: Path, line: str) -> None:
    (bare_root / "proc/1/cgroup").write_text(line + "\n")
    assert "/proc/1/cgroup" in container_evidence(bare_root, {})


def test_kubernetes_environment(bare_root: Path) -> None:
    assert "KUBERNETES_SERVICE_HOST" in container_evidence(
        bare_root, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    )


def test_the_socket_path_follows_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert docker_socket_path() == "/var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert docker_socket_path() == "/run/user/1000/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert docker_socket_path() == ""


def test_a_socket_is_reachable_only_while_something_listens(tmp_path: Path) -> None:
    path = str(tmp_path / "engine.sock")
    assert not socket_reachable(path) and not socket_reachable("")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        assert socket_reachable(path)
