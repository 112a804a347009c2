"""The sandbox policy as the Kubernetes backend renders it, pinned field by field: the pod
and every container carry the whole hardening themselves (defence in depth: a pod-level
setting is not relied on for a container), with the volumes, mounts and Job bounds the
policy asks for. Pod Security admission would accept weaker manifests than these."""

from __future__ import annotations

from typing import Any

import pytest

from executions.backends.kubernetes import manifests
from sandbox.contract import RunRequest
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


@pytest.fixture
def job() -> dict[str, Any]:
    request = RunRequest(
        execution_id=7,
        handle="evalplatform-7-0",
        image="evalplatform/python:3.11",
        command=("python3", "main.py"),
        files={"main.py": b"print(1)", "util.py": b"x"},
        stdin=b"",
        policy=SandboxPolicy(limits=Limits(wall_time_ms=2500, memory_mb=64, output_bytes=1024)),
    )
    options = manifests.KubernetesOptions(namespace="sandbox", service_account="sandbox-runner")
    return manifests.job_for(request, options)


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
    assert [c["name"] for c in containers] == ["prepare", "program", "stderr"]
    for container in containers:
        assert container["securityContext"] == CONTAINER_SECURITY, container["name"]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], "requests = limits"


def test_the_program_gets_its_limits_and_only_its_volumes(job: dict[str, Any]) -> None:
    spec = job["spec"]["template"]["spec"]
    (program,) = (c for c in spec["containers"] if c["name"] == "program")
    assert program["resources"]["limits"] == {
        "cpu": "1000m",
        "memory": "64Mi",
        "ephemeral-storage": "9Mi",  # 4 x output + 8 MiB, rounded up
    }
    assert program["image"] == "evalplatform/python:3.11"
    assert program["args"] == ["python3", "main.py"]
    assert program["command"][:2] == ["/bin/sh", "-c"] and program["command"][3] == (
        "evalplatform-sandbox"
    )
    assert program["volumeMounts"] == [
        {"name": "code", "mountPath": "/sandbox/code", "readOnly": True},
        {"name": "stdin", "mountPath": "/sandbox/stdin", "readOnly": True},
        {"name": "scratch", "mountPath": "/tmp"},
        {"name": "stderr-pipe", "mountPath": "/sandbox/stderr"},
    ]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes["code"]["configMap"]["defaultMode"] == 0o444
    assert volumes["stdin"]["configMap"]["defaultMode"] == 0o444
    assert volumes["scratch"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Mi"}
    assert volumes["stderr-pipe"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    for helper in ("prepare", "stderr"):
        (container,) = (
            c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == helper
        )
        assert container["volumeMounts"] == [
            {"name": "stderr-pipe", "mountPath": "/sandbox/stderr"}
        ]
        assert container["command"][:2] == ["/bin/sh", "-c"]
        assert container["env"] == [{"name": "PATH", "value": "/usr/local/bin:/usr/bin:/bin"}]


def test_the_job_runs_once_within_its_deadline(job: dict[str, Any]) -> None:
    bounds = {key: value for key, value in job["spec"].items() if key != "template"}
    assert bounds == {
        "backoffLimit": 0,
        "completions": 1,
        "parallelism": 1,
        "activeDeadlineSeconds": 63,  # ceil(2.5 s) = 3, plus the 60 s start-up allowance
        "ttlSecondsAfterFinished": 300,
    }
    labels = job["metadata"]["labels"]
    assert labels[manifests.EXECUTION_LABEL] == "7"
