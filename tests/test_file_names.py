"""One table of hostile file names, tried at every layer that takes a name.

The platform accepts only plain names (its first line of defence); every backend's run(), and
the execution service's runner behind the remote backend, refuses anything that could leave
the code directory, whatever the platform let through (the second, ``sandbox.files``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import PurePosixPath
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from executions import services
from executions.backends import kubernetes
from executions.models import Runtime
from sandbox import supervisor
from sandbox.contract import RunRequest, Session
from sandbox.files import safe_relative
from sandbox.policy import Limits, SandboxPolicy
from tests.sandbox.test_supervisor import unpacked

# Names that could reach outside the code directory or break its tree.
ESCAPING = {
    "absolute": "/etc/passwd",
    "parent": "../main.py",
    "nested parent": "pkg/../../main.py",
    "dot dot": "..",
    "dot": ".",
    "empty": "",
    "empty part": "pkg//main.py",
    "trailing slash": "pkg/",
    "NUL": "main.py\x00.txt",
}
# Names a POSIX file system takes literally, inside the code directory; the platform still
# refuses them, as it refuses anything but plain names.
ODD = {
    "backslash": "..\\main.py",
    "one dot leaders": "\u2024\u2024/main.py",
    "fullwidth dots": "\uff0e\uff0e/main.py",
    "very long": "a" * 300 + ".py",
    "dot file": ".bashrc",
    "newline": "util.py\n",
    "leading space": " util.py",
    "subdirectory": "pkg/util.py",
    "control character": "util\x1b.py",
}
HOSTILE = {**ESCAPING, **ODD}


def request_with(name: str) -> RunRequest:
    return RunRequest(
        execution_id=1,
        handle="evalplatform-1-0",
        image="evalplatform/python:3.11",
        command=("python3", "main.py"),
        files={"main.py": b"print(1)\n", name: b"x"},
        stdin=b"",
        policy=SandboxPolicy(limits=Limits(wall_time_ms=1000, memory_mb=64, output_bytes=1024)),
    )


@pytest.mark.django_db
@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_platform_accepts_only_plain_names(user: Any, runtime: Runtime, name: str) -> None:
    files = [{"name": "main.py", "content": "print(1)"}, {"name": name, "content": "x"}]
    with pytest.raises(ValidationError) as caught:
        services.evaluation_submit(user=user, runtime=runtime, files=files)
    assert "files[1].name" in caught.value.message_dict


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["main.py", "util_2.py", "Main-Class.java", "_x", "a" * 100])
def test_plain_names_pass(user: Any, runtime: Runtime, name: str) -> None:
    files = [{"name": "main.py", "content": "print(1)"}]
    if name != "main.py":
        files.append({"name": name, "content": "x"})
    evaluation = services.evaluation_submit(user=user, runtime=runtime, files=files)
    assert name in {item["name"] for item in evaluation.files}


def archive_members(name: str) -> list[str]:
    return list(unpacked(supervisor.code_archive({"main.py": b"1", name: b"x"})))


def stays_inside(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return bool(parts) and not PurePosixPath(path).is_absolute() and ".." not in parts


@pytest.mark.parametrize("name", ESCAPING.values(), ids=ESCAPING.keys())
def test_the_sandbox_layer_refuses_names_that_leave_the_code_directory(name: str) -> None:
    """The one check every backend's run() applies before anything is created."""
    with pytest.raises(ValueError, match="unsafe file name"):
        safe_relative(name)
    assert "unsafe file name" in request_with(name).problem()


@pytest.mark.parametrize("name", ODD.values(), ids=ODD.keys())
def test_the_sandbox_layer_keeps_odd_names_inside_the_code_directory(name: str) -> None:
    assert stays_inside(str(safe_relative(name)))
    assert request_with(name).problem() == ""


@pytest.mark.parametrize("name", ESCAPING.values(), ids=ESCAPING.keys())
def test_the_supervisor_archive_refuses_names_that_leave_the_code_directory(name: str) -> None:
    with pytest.raises(ValueError, match="unsafe file name"):
        supervisor.code_archive({"main.py": b"1", name: b"x"})


@pytest.mark.parametrize("name", ODD.values(), ids=ODD.keys())
def test_the_supervisor_archive_keeps_odd_names_inside_the_code_directory(name: str) -> None:
    members = archive_members(name)
    assert all(stays_inside(member) for member in members), members


def part_of(request: RunRequest) -> kubernetes.Part:
    return kubernetes.Part(Session.of_request(request), 0, 1)


@pytest.mark.parametrize("name", ESCAPING.values(), ids=ESCAPING.keys())
def test_kubernetes_refuses_names_that_leave_the_code_directory(name: str) -> None:
    part = part_of(request_with(name))
    with pytest.raises(ValueError, match="unsafe file name"):
        kubernetes.configmap_for(part, "sandbox", supervisor_binary=b"")
    options = kubernetes.KubernetesOptions(namespace="sandbox", service_account="sandbox")
    with pytest.raises(ValueError, match="unsafe file name"):
        kubernetes.job_for(part, options)


@pytest.mark.parametrize("name", ODD.values(), ids=ODD.keys())
def test_kubernetes_keeps_odd_names_inside_the_code_directory(name: str) -> None:
    options = kubernetes.KubernetesOptions(namespace="sandbox", service_account="sandbox")
    job = kubernetes.job_for(part_of(request_with(name)), options)
    (code,) = (v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "code")
    paths = [item["path"] for item in code["configMap"]["items"]]
    assert all(stays_inside(path) for path in paths), paths


def test_kubernetes_mounts_each_file_under_its_own_name() -> None:
    part = part_of(request_with("pkg/util.py"))
    options = kubernetes.KubernetesOptions(namespace="sandbox", service_account="sandbox")
    (code,) = (
        volume
        for volume in kubernetes.job_for(part, options)["spec"]["template"]["spec"]["volumes"]
        if volume["name"] == "code"
    )
    items = {item["key"]: item["path"] for item in code["configMap"]["items"]}
    assert items == {"f0": "main.py", "f1": "pkg/util.py"}
    configmap = kubernetes.configmap_for(part, "sandbox", supervisor_binary=b"\x7fELF")
    assert configmap["immutable"] is True, "a running pod's code cannot be changed under it"
    assert set(configmap["binaryData"]) == {"supervisor", "f0", "f1", "stream"}


def sized_part(code_bytes: int, stdin_bytes: int) -> kubernetes.Part:
    base = request_with("util.py")
    return part_of(replace(base, files={"main.py": b"x" * code_bytes}, stdin=b"s" * stdin_bytes))


def test_the_configmap_budget_counts_base64_of_everything_it_holds() -> None:
    budget = kubernetes.CONFIGMAP_BUDGET
    # base64 of n bytes is 4 * ceil(n / 3) characters; the keys here are the supervisor
    # (empty), main.py and the stream, whose own bytes (headers, argv, stdin) come first.
    stream = len(sized_part(0, 0).stream())
    fits = (budget - 4 * -(-stream // 3)) // 4 * 3
    kubernetes.configmap_for(sized_part(fits, 0), "sandbox", supervisor_binary=b"")
    with pytest.raises(ValueError, match=r"take \d+ bytes in base64"):
        kubernetes.configmap_for(sized_part(fits + 1, 0), "sandbox", supervisor_binary=b"")
    with pytest.raises(ValueError, match=r"take \d+ bytes in base64"):
        kubernetes.configmap_for(sized_part(fits - 3, 3), "sandbox", supervisor_binary=b"s")
