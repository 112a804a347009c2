"""The Docker backend's pure parts: the container it asks the engine for (the sandbox policy,
rendered). No engine needed."""

from __future__ import annotations

from typing import Any

from sandbox import supervisor
from sandbox.contract import CompileStep, Session
from sandbox.docker.config import (
    EXECUTION_LABEL,
    MANAGED_LABEL,
    case_memory_bytes,
    container_config_for,
)
from sandbox.policy import Limits, SandboxPolicy

MIB = 1024 * 1024
LIMITS = Limits(wall_time_ms=2000, memory_mb=96, output_bytes=1000, cpus=0.5, pids=20)


def _session(compile_step: CompileStep | None = None, **policy: Any) -> Session:
    return Session(
        execution_id=42,
        handle="h-1",
        image="img:1",
        command=("python3", "main.py"),
        files={"main.py": b"pass"},
        policy=SandboxPolicy(limits=LIMITS, **policy),
        stdins=[b""],
        labels={"team": "x", MANAGED_LABEL: "forged"},
        compile=compile_step,
    )


def test_container_config_renders_the_policy() -> None:
    config = container_config_for(_session(), supervisor_size=3 * MIB)
    host = config["HostConfig"]
    assert host["NetworkMode"] == "none" and config["NetworkDisabled"] is True
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {
        "/tmp": "rw,noexec,nosuid,nodev,size=16m,mode=1777",
        "/sandbox/code": "rw,exec,nosuid,nodev,size=16m,mode=0755",
        "/sandbox/bin": "rw,exec,nosuid,nodev,size=5m,mode=0700",
    }
    # Only the supervisor's three; every step drops them with its uid.
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["SETUID", "SETGID", "KILL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]  # default seccomp stays on
    assert host["Privileged"] is False
    assert host["PidsLimit"] == 20 + supervisor.EXTRA_PIDS
    # The step's limit, plus the supervisor and its buffers for one step's output.
    memory = 96 * MIB + supervisor.SUPERVISOR_MEMORY_BYTES + 2 * 1000
    assert host["Memory"] == host["MemorySwap"] == memory
    assert host["NanoCpus"] == 500_000_000
    assert host["Init"] is False  # the supervisor is PID 1
    assert host["Ulimits"] == [
        {"Name": "fsize", "Soft": 16 * MIB, "Hard": 16 * MIB},
        {"Name": "nofile", "Soft": 64, "Hard": 64},
        {"Name": "core", "Soft": 0, "Hard": 0},
    ]
    assert host["IpcMode"] == "private" and host["ShmSize"] == 16 * MIB
    # Code and stdin arrive over the attach stream; no terminal, no name of the host's.
    assert (config["AttachStdin"], config["OpenStdin"], config["StdinOnce"]) == (True,) * 3
    assert (config["AttachStdout"], config["AttachStderr"], config["Tty"]) == (True, True, False)
    assert config["Hostname"] == "sandbox" and config["Image"] == "img:1"
    assert host["LogConfig"]["Type"] == "none"
    assert "Binds" not in host and "Mounts" not in host and "Runtime" not in host
    assert config["User"] == "0:0"
    assert config["Env"] == [
        f"{k}={v}" for k, v in SandboxPolicy(limits=Limits(1, 1, 1)).environment.items()
    ]
    # The loader takes exactly the supervisor's bytes, then becomes it.
    assert config["Entrypoint"] == ["/bin/sh", "-c", supervisor.LOADER, "evalplatform-loader"]
    assert config["Cmd"] == [str(3 * MIB)]
    assert config["Labels"] == {"team": "x", MANAGED_LABEL: "1", EXECUTION_LABEL: "42"}


def test_a_compile_step_gets_a_build_directory_and_the_larger_limits() -> None:
    step = CompileStep(
        command=("cc", "main.c"),
        limits=Limits(wall_time_ms=9000, memory_mb=512, output_bytes=5000),
    )
    host = container_config_for(_session(step), supervisor_size=MIB)["HostConfig"]
    # Root's, so that the supervisor can close it to the cases after the compile step.
    assert host["Tmpfs"]["/sandbox/build"] == "rw,exec,nosuid,nodev,size=16m,mode=1777"
    assert host["Memory"] == 512 * MIB + supervisor.SUPERVISOR_MEMORY_BYTES + 2 * 5000
    # The cases' own, to which the host lowers the sandbox once the compile step is over.
    session = _session(step)
    assert (
        case_memory_bytes(session)
        == session.limits.memory_bytes
        + supervisor.SUPERVISOR_MEMORY_BYTES
        + 2 * session.limits.output_bytes
        < host["Memory"]
    )


def test_container_config_optional_runtime_and_network() -> None:
    def host(session: Session, runtime: str = "") -> dict[str, Any]:
        config = container_config_for(session, supervisor_size=0, runtime=runtime)
        return config["HostConfig"]

    assert host(_session(), "runsc")["Runtime"] == "runsc"
    assert host(_session(runtime_class="kata"), "runsc")["Runtime"] == "kata"
    assert host(_session(network=True))["NetworkMode"] == "bridge"
