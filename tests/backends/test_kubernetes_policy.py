"""The sandbox policy as the Kubernetes backend renders it, pinned field by field: the pod
and every container carry the whole hardening themselves (defence in depth: a pod-level
setting is not relied on for a container), with the volumes, mounts and Job bounds the
policy asks for. Pod Security admission would accept weaker manifests than these."""

from __future__ import annotations

from typing import Any

import pytest

from executions.backends.kubernetes import manifests
from sandbox.contract import CompileStep, Session
from sandbox.policy import Limits, SandboxPolicy

CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "seccompProfile": {"type": "RuntimeDefault"},
}
ENV = [
    {"name": "PATH", "value": "/usr/local/bin:/usr/bin:/bin"},
    {"name": "HOME", "value": "/tmp"},
    {"name": "LANG", "value": "C.UTF-8"},
    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    {"name": "PYTHONUNBUFFERED", "value": "1"},
]


def render(*, compiles: bool) -> dict[str, Any]:
    session = Session(
        execution_id=7,
        handle="evalplatform-7-0",
        image="evalplatform/python:3.11",
        command=("python3", "main.py"),
        files={"main.py": b"print(1)", "util.py": b"x"},
        policy=SandboxPolicy(limits=Limits(wall_time_ms=2500, memory_mb=64, output_bytes=1024)),
        stdins=[b"", b"1"],
        compile=CompileStep(
            ("python3", "-m", "compileall", "."),
            Limits(wall_time_ms=10_000, memory_mb=256, output_bytes=4096, cpus=2),
        )
        if compiles
        else None,
    )
    options = manifests.KubernetesOptions(namespace="sandbox", service_account="sandbox-runner")
    return manifests.job_for(manifests.Part(session, 0, 2), options)


@pytest.fixture(params=[False, True], ids=["cases", "compile and cases"])
def job(request: pytest.FixtureRequest) -> dict[str, Any]:
    return render(compiles=request.param)


def test_the_pod_is_hardened_as_a_whole(job: dict[str, Any]) -> None:
    spec = job["spec"]["template"]["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "fsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["serviceAccountName"] == "sandbox-runner"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert (spec["hostNetwork"], spec["hostPID"], spec["hostIPC"]) == (False, False, False)
    assert spec["restartPolicy"] == "Never"
    assert spec["terminationGracePeriodSeconds"] == 0


def test_every_container_is_hardened_itself(job: dict[str, Any]) -> None:
    spec = job["spec"]["template"]["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    assert [c["name"] for c in containers] in (["session"], ["compile", "session"])
    for container in containers:
        assert container["securityContext"] == CONTAINER_SECURITY, container["name"]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], "requests = limits"
        # The supervisor as PID 1: no shell, no capability, its own uid for every step.
        assert container["command"] == ["/sandbox/bin/supervisor", "/sandbox/input/stream"]
        assert container["workingDir"] == "/"
        assert container["env"] == ENV, "only the policy's variables"


def test_the_cases_container_gets_its_limits_and_only_its_volumes() -> None:
    spec = render(compiles=False)["spec"]["template"]["spec"]
    (cases,) = spec["containers"]
    assert cases["resources"]["limits"] == {
        "cpu": "1000m",
        "memory": "73Mi",  # 64 MiB, the supervisor's 8 MiB and two 1 KiB output buffers
        "ephemeral-storage": "9Mi",  # two records (header, 2 x 1024 bytes, newline), 8 MiB
    }
    assert cases["image"] == "evalplatform/python:3.11"
    assert cases["volumeMounts"] == [
        {"name": "supervisor", "mountPath": "/sandbox/bin", "readOnly": True},
        {"name": "stream", "mountPath": "/sandbox/input", "readOnly": True},
        {"name": "code", "mountPath": "/sandbox/code", "readOnly": True},
        {"name": "scratch", "mountPath": "/tmp"},
    ]
    assert spec["volumes"] == [
        {
            "name": "supervisor",
            "configMap": {
                "name": "evalplatform-7-0",
                "defaultMode": 0o555,
                "items": [{"key": "supervisor", "path": "supervisor"}],
            },
        },
        {
            "name": "code",
            "configMap": {
                "name": "evalplatform-7-0",
                "defaultMode": 0o444,
                "items": [{"key": "f0", "path": "main.py"}, {"key": "f1", "path": "util.py"}],
            },
        },
        {
            "name": "stream",
            "configMap": {
                "name": "evalplatform-7-0",
                "defaultMode": 0o444,
                "items": [{"key": "stream", "path": "stream"}],
            },
        },
        {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]


def test_the_compile_step_builds_what_the_cases_read_only_run() -> None:
    spec = render(compiles=True)["spec"]["template"]["spec"]
    (compiler,) = spec["initContainers"]
    (cases,) = spec["containers"]
    assert compiler["resources"]["limits"] == {
        "cpu": "2000m",
        "memory": "265Mi",  # 256 MiB, the supervisor's 8 MiB and two 4 KiB output buffers
        "ephemeral-storage": "9Mi",
    }
    # The build's pages stay charged to the pod while the cases run: 16 MiB more.
    assert cases["resources"]["limits"]["memory"] == "89Mi"
    assert compiler["volumeMounts"] == [
        {"name": "supervisor", "mountPath": "/sandbox/bin", "readOnly": True},
        {"name": "compile-stream", "mountPath": "/sandbox/input", "readOnly": True},
        {"name": "code", "mountPath": "/sandbox/code", "readOnly": True},
        {"name": "build", "mountPath": "/sandbox/build"},
        {"name": "scratch", "mountPath": "/tmp"},
    ]
    assert cases["volumeMounts"] == [
        {"name": "supervisor", "mountPath": "/sandbox/bin", "readOnly": True},
        {"name": "stream", "mountPath": "/sandbox/input", "readOnly": True},
        {"name": "build", "mountPath": "/sandbox/code", "readOnly": True},
        {"name": "scratch", "mountPath": "/tmp"},
    ]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes["compile-stream"]["configMap"]["items"] == [
        {"key": "compile-stream", "path": "stream"}
    ]
    assert volumes["build"] == {
        "name": "build",
        "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"},
    }


def test_the_job_runs_once_within_its_deadline(job: dict[str, Any]) -> None:
    bounds = {key: value for key, value in job["spec"].items() if key != "template"}
    compiles = bool(job["spec"]["template"]["spec"].get("initContainers"))
    assert bounds == {
        "backoffLimit": 0,
        "completions": 1,
        "parallelism": 1,
        # Each step's wall time and 5 s of grace, plus the 60 s start-up allowance:
        # two cases of 2.5 s (15 s), and a compile step of 10 s (15 s).
        "activeDeadlineSeconds": 15 + (15 if compiles else 0) + 60,
        "ttlSecondsAfterFinished": 300,
    }
    labels = job["metadata"]["labels"]
    assert labels[manifests.EXECUTION_LABEL] == "7"
    assert labels[manifests.HANDLE_LABEL] == labels[manifests.JOB_LABEL] == "evalplatform-7-0"
