"""A rendered sandbox Job's pod, run on the local Docker engine the way a kubelet would.

No cluster runs here, but what the pod's containers do is the supervisor's business, and the
supervisor runs the same on any container runtime. ``run_pod`` takes the Job and ConfigMap
exactly as ``job_for`` and ``configmap_for`` render them and gives each container what the
kubelet would, from the manifest's own fields:

* ``configMap`` volumes: the items written with their modes in the kubelet's layout (a
  timestamped directory, ``..data`` pointing at it, a symlink per top-level entry), mounted
  read-only;
* ``emptyDir`` volumes: a Docker volume whose root belongs to root, group fsGroup, mode
  02777, as the kubelet leaves it (on disk: a Docker tmpfs volume would not outlive the init
  container);
* ``/dev/termination-log``: a file of the pod's, mode 0666, writable by every uid;
* the securityContext: the uid and gid, fsGroup as a supplementary group, a read-only
  root, all capabilities dropped, no privilege escalation (``no-new-privileges``), Docker's
  default seccomp profile (the RuntimeDefault of containerd's); no network; the memory and
  CPU limits;
* init containers first, each to its end; a failed one fails the pod, whose other containers
  never start (``restartPolicy: Never``).
"""

from __future__ import annotations

import base64
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.types import Mount

# A pod's containers run one after another here, each within this.
CONTAINER_TIMEOUT_S = 60


@dataclass(frozen=True)
class ContainerRun:
    exit_code: int
    log: bytes


def _mib(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2]) * 1024 * 1024


def _nano_cpus(quantity: str) -> int:
    assert quantity.endswith("m"), quantity
    return int(quantity[:-1]) * 1_000_000


def _write_configmap_volume(root: Path, volume: dict[str, Any], data: dict[str, bytes]) -> None:
    """The kubelet's atomic writer: files in a timestamped directory, ``..data`` -> it, and a
    symlink to ``..data/<entry>`` for each top-level entry."""
    source = volume["configMap"]
    stamp = root / "..2026_11_29_00_00_00.000000001"
    for item in source["items"]:
        path = stamp / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[item["key"]])
        path.chmod(item.get("mode", source["defaultMode"]))
    (root / "..data").symlink_to(stamp.name)
    for entry in sorted({item["path"].split("/")[0] for item in source["items"]}):
        (root / entry).symlink_to(f"..data/{entry}")


@contextmanager
def _volumes(
    api: Any, workdir: Path, pod_spec: dict[str, Any], configmap: dict[str, Any]
) -> Iterator[dict[str, tuple[str, str]]]:
    """Each volume of the pod as a Docker mount's type and source; removed on the way out."""
    data = {key: base64.b64decode(value) for key, value in configmap["binaryData"].items()}
    fs_group = pod_spec["securityContext"]["fsGroup"]
    sources: dict[str, tuple[str, str]] = {}
    made: list[str] = []
    try:
        for volume in pod_spec["volumes"]:
            name = volume["name"]
            if "configMap" in volume:
                root = workdir / name
                root.mkdir()
                _write_configmap_volume(root, volume, data)
                sources[name] = ("bind", str(root))
            else:
                assert "emptyDir" in volume, volume
                docker_volume = f"evalplatform-test-{uuid.uuid4().hex[:12]}"
                api.create_volume(docker_volume)
                made.append(docker_volume)
                mountpoint = api.inspect_volume(docker_volume)["Mountpoint"]
                os.chown(mountpoint, 0, fs_group)
                os.chmod(mountpoint, 0o2777)  # noqa: S103  (an emptyDir, as the kubelet makes it)
                sources[name] = ("volume", docker_volume)
        yield sources
    finally:
        for docker_volume in made:
            api.remove_volume(docker_volume, force=True)


def _run_container(
    api: Any,
    image: str,
    pod_spec: dict[str, Any],
    container: dict[str, Any],
    sources: dict[str, tuple[str, str]],
    termination_log: Path,
) -> ContainerRun:
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = []
    for mount in container["volumeMounts"]:
        kind, source = sources[mount["name"]]
        # no_copy: the volume stays as made, not filled from the image's directory.
        mounts.append(
            Mount(
                mount["mountPath"],
                source,
                type=kind,
                read_only=bool(mount.get("readOnly")),
                no_copy=kind == "volume",
            )
        )
    mounts.append(Mount("/dev/termination-log", str(termination_log), type="bind"))
    limits = container["resources"]["limits"]
    host_config = api.create_host_config(
        mounts=mounts,
        read_only=security["readOnlyRootFilesystem"],
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        network_mode="none",
        mem_limit=_mib(limits["memory"]),
        memswap_limit=_mib(limits["memory"]),
        nano_cpus=_nano_cpus(limits["cpu"]),
        group_add=[str(pod_spec["securityContext"]["fsGroup"])],
        init=False,
        # Byte for byte, as a CRI log file keeps it (json-file would mangle invalid UTF-8).
        log_config={"Type": "local", "Config": {}},
    )
    created = api.create_container(
        image,
        entrypoint=container["command"],
        command=container.get("args"),
        working_dir=container["workingDir"],
        environment={env["name"]: env["value"] for env in container["env"]},
        user=f"{security['runAsUser']}:{security['runAsGroup']}",
        host_config=host_config,
        labels={"evalplatform.test": "kube-pod-on-docker"},
    )
    try:
        api.start(created["Id"])
        status = api.wait(created["Id"], timeout=CONTAINER_TIMEOUT_S)
        return ContainerRun(status["StatusCode"], api.logs(created["Id"], stdout=True, stderr=True))
    finally:
        api.remove_container(created["Id"], force=True)


@dataclass(frozen=True)
class PodRun:
    """What each container did (only those that ran), and each one's termination log after."""

    containers: dict[str, ContainerRun]
    termination_logs: dict[str, bytes]


def run_pod(api: Any, job: dict[str, Any], configmap: dict[str, Any]) -> PodRun:
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    runs: dict[str, ContainerRun] = {}
    logs: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="evalplatform-pod-") as tmp:
        workdir = Path(tmp)
        with _volumes(api, workdir, pod_spec, configmap) as sources:
            for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
                termination_log = workdir / f"termination-log-{container['name']}"
                termination_log.touch()
                termination_log.chmod(0o666)
                run = _run_container(
                    api, container["image"], pod_spec, container, sources, termination_log
                )
                runs[container["name"]] = run
                logs[container["name"]] = termination_log.read_bytes()
                if run.exit_code != 0:
                    break  # the pod failed: nothing after it starts
    return PodRun(runs, logs)
