"""The Docker backend's pure parts: the container it asks the engine for (the sandbox policy,
rendered) and the code archive. No engine needed."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import pytest

from sandbox.contract import RunRequest
from sandbox.docker.config import (
    EXECUTION_LABEL,
    LOADER,
    MANAGED_LABEL,
    code_archive,
    container_config_for,
)
from sandbox.policy import Limits, SandboxPolicy


def _request(**policy: Any) -> RunRequest:
    limits = Limits(wall_time_ms=2000, memory_mb=96, output_bytes=1000, cpus=0.5, pids=20)
    return RunRequest(
        execution_id=42,
        handle="h-1",
        image="img:1",
        command=("python3", "main.py"),
        files={"main.py": b"pass"},
        stdin=b"",
        policy=SandboxPolicy(limits=limits, **policy),
        labels={"team": "x", MANAGED_LABEL: "forged"},
    )


def test_container_config_renders_the_policy() -> None:
    config = container_config_for(_request(), archive_size=1536)
    host = config["HostConfig"]
    assert host["NetworkMode"] == "none" and config["NetworkDisabled"] is True
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {
        "/tmp": "rw,noexec,nosuid,nodev,size=16m,mode=1777",
        "/sandbox/code": "rw,noexec,nosuid,nodev,size=16m,uid=65534,gid=65534,mode=0700",
    }
    assert host["CapDrop"] == ["ALL"] and "CapAdd" not in host
    assert host["SecurityOpt"] == ["no-new-privileges:true"]  # default seccomp stays on
    assert host["Privileged"] is False
    assert host["PidsLimit"] == 20
    assert host["Memory"] == host["MemorySwap"] == 96 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["Init"] is True
    assert host["Ulimits"] == [
        {"Name": "fsize", "Soft": 16 * 1024 * 1024, "Hard": 16 * 1024 * 1024},
        {"Name": "nofile", "Soft": 64, "Hard": 64},
        {"Name": "core", "Soft": 0, "Hard": 0},
    ]
    assert host["IpcMode"] == "private" and host["ShmSize"] == 16 * 1024 * 1024
    # Code and stdin arrive over the attach stream; no terminal, no name of the host's.
    assert (config["AttachStdin"], config["OpenStdin"], config["StdinOnce"]) == (True,) * 3
    assert (config["AttachStdout"], config["AttachStderr"], config["Tty"]) == (True, True, False)
    assert config["Hostname"] == "sandbox" and config["Image"] == "img:1"
    assert host["LogConfig"]["Type"] == "none"
    assert "Binds" not in host and "Mounts" not in host and "Runtime" not in host
    assert config["User"] == "65534:65534"
    assert config["WorkingDir"] == "/sandbox/code"
    assert config["Env"] == [
        f"{k}={v}" for k, v in SandboxPolicy(limits=Limits(1, 1, 1)).environment.items()
    ]
    # The loader unpacks exactly the archive's bytes, then execs the catalogue's command.
    assert config["Entrypoint"] == ["/bin/sh", "-c", LOADER, "evalplatform-loader"]
    assert config["Cmd"] == ["1536", "python3", "main.py"]
    assert config["Labels"] == {"team": "x", MANAGED_LABEL: "1", EXECUTION_LABEL: "42"}


def test_container_config_optional_runtime_and_network() -> None:
    assert (
        container_config_for(_request(), archive_size=0, runtime="runsc")["HostConfig"]["Runtime"]
        == "runsc"
    )
    assert (
        container_config_for(_request(runtime_class="kata"), archive_size=0, runtime="runsc")[
            "HostConfig"
        ]["Runtime"]
        == "kata"
    )
    assert (
        container_config_for(_request(network=True), archive_size=0)["HostConfig"]["NetworkMode"]
        == "bridge"
    )


def test_code_archive_is_read_only() -> None:
    data = code_archive({"main.py": b"print(1)", "pkg/mod.py": b"X = 1"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        entries = {m.name: (m.uid, m.gid, m.mode, m.isdir()) for m in tar.getmembers()}
    assert entries["main.py"] == (0, 0, 0o444, False)
    assert entries["pkg/mod.py"] == (0, 0, 0o444, False)
    assert entries["pkg"] == (0, 0, 0o555, True)


@pytest.mark.parametrize("name", ["../x.py", "/etc/passwd", "a/../../b", "", "a//b", "a\x00b"])
def test_code_archive_rejects_unsafe_names(name: str) -> None:
    with pytest.raises(ValueError):
        code_archive({name: b""})
