"""Rendered sandbox pods, run on the local Docker engine the way a kubelet would.

No cluster runs here, but what a pod's containers do is the supervisor's business, and the
supervisor runs the same on any container runtime. Pods are run from the Job and ConfigMap
exactly as ``job_for`` and ``configmap_for`` render them, each container given what the
kubelet would give it, from the manifest's own fields:

* ``configMap`` volumes: the items written with their modes in the kubelet's layout (a
  timestamped directory, ``..data`` pointing at it, a symlink per top-level entry), mounted
  read-only;
* ``emptyDir`` volumes (all memory-backed): a tmpfs of the ``sizeLimit``, its root root's,
  group fsGroup, mode 02777, as the kubelet leaves it, held mounted by a pause container;
* ``/dev/termination-log``: a file of the pod's, mode 0666, writable by every uid;
* the securityContext: the uid and gid, fsGroup as a supplementary group, a read-only
  root, all capabilities dropped, no privilege escalation (``no-new-privileges``), Docker's
  default seccomp profile (the RuntimeDefault of containerd's); no network; the memory and
  CPU limits, and the node's PID limit; the log kept byte for byte, as a CRI log file
  keeps it;
* init containers first, each to its end; a failed one fails the pod, whose other containers
  never start (``restartPolicy: Never``).

``run_pod`` runs one pod to its end. ``DockerKubelet`` serves the API emulator: it runs the
pod of every Job the backend creates there, streams each container's log into the
emulator's pod logs and reports the containers' states, so the backend runs end to end.
What differs from a cluster: Docker's out-of-memory killer takes the program, not the whole
container as the kubelet's cgroup v2 setting does.
"""

from __future__ import annotations

import base64
import contextlib
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
from docker.types import Mount

from .kube_emulator import CONFIGMAPS, JOBS, Emulator, KubeletPlayer, Logs

# A pod's containers run one after another here, each within this.
CONTAINER_TIMEOUT_S = 120
# Every container and volume made here carries this label, its value naming who made it.
LABEL = "evalplatform.test"
# The kubelet's podPidsLimit on the sandbox nodes this stands for.
POD_PIDS_LIMIT = 256
# How long a stopped container's log may still take to arrive.
STREAM_END_WAIT_S = 1.0
# How long closing waits for a pod to end before removing what is left of it.
CLOSE_WAIT_S = 10.0


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


def _tmpfs_size(size_limit: str) -> str:
    assert size_limit.endswith("Mi"), size_limit
    return f"{size_limit[:-2]}m"


@contextmanager
def pod_volumes(
    api: Any, pod_spec: dict[str, Any], configmap: dict[str, Any], owner: str
) -> Iterator[dict[str, tuple[str, str]]]:
    """Each volume of the pod as a Docker mount's type and source; removed on the way out.

    A pause container holds the pod's memory-backed volumes mounted for the pod's life, as
    the pod's own does: a Docker tmpfs volume lives only while a container mounts it, and
    the build must outlive the init container.
    """
    data = {key: base64.b64decode(value) for key, value in configmap["binaryData"].items()}
    fs_group = pod_spec["securityContext"]["fsGroup"]
    sources: dict[str, tuple[str, str]] = {}
    made: list[str] = []
    pause = ""
    with tempfile.TemporaryDirectory(prefix="evalplatform-pod-") as workdir:
        try:
            for volume in pod_spec["volumes"]:
                name = volume["name"]
                if "configMap" in volume:
                    root = Path(workdir) / name
                    root.mkdir()
                    _write_configmap_volume(root, volume, data)
                    sources[name] = ("bind", str(root))
                    continue
                empty_dir = volume["emptyDir"]
                assert empty_dir["medium"] == "Memory", volume
                docker_volume = f"evalplatform-test-{uuid.uuid4().hex[:12]}"
                # The kubelet's emptyDir: root's, group fsGroup, open to all.
                options = f"size={_tmpfs_size(empty_dir['sizeLimit'])},mode=2777,gid={fs_group}"
                api.create_volume(
                    docker_volume,
                    driver_opts={"type": "tmpfs", "device": "tmpfs", "o": options},
                    labels={LABEL: owner},
                )
                made.append(docker_volume)
                sources[name] = ("volume", docker_volume)
            pause = _pause(
                api,
                pod_spec,
                [source for kind, source in sources.values() if kind == "volume"],
                owner,
            )
            yield sources
        finally:
            if pause:
                api.remove_container(pause, force=True)
            for docker_volume in made:
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_volume(docker_volume, force=True)


def _pause(api: Any, pod_spec: dict[str, Any], volumes: list[str], owner: str) -> str:
    """Start a container that only holds ``volumes`` mounted; its id."""
    image = pod_spec["containers"][0]["image"]
    host_config = api.create_host_config(
        mounts=[Mount(f"/volumes/{name}", name, type="volume", no_copy=True) for name in volumes],
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        network_mode="none",
    )
    created = api.create_container(
        image,
        entrypoint=["sleep", "infinity"],
        user="65534:65534",
        host_config=host_config,
        labels={LABEL: owner},
    )
    api.start(created["Id"])
    return str(created["Id"])


def _termination_log(directory: str, container: str) -> Path:
    path = Path(directory) / f"termination-log-{container}"
    path.touch()
    path.chmod(0o666)  # the kubelet's: writable by every uid
    return path


def create_container(
    api: Any,
    pod_spec: dict[str, Any],
    container: dict[str, Any],
    sources: dict[str, tuple[str, str]],
    termination_log: Path,
    owner: str,
) -> str:
    """Create (not start) one of the pod's containers as the kubelet would; its id."""
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
        # A Job cannot ask for a PID limit: the node's kubelet sets one for every pod
        # (podPidsLimit), as deploy/kubernetes/README.md asks of sandbox nodes.
        pids_limit=POD_PIDS_LIMIT,
        init=False,
        # Byte for byte, as a CRI log file keeps it (json-file would mangle invalid UTF-8).
        log_config={"Type": "local", "Config": {}},
    )
    created = api.create_container(
        container["image"],
        entrypoint=container["command"],
        command=container.get("args"),
        working_dir=container["workingDir"],
        environment={env["name"]: env["value"] for env in container["env"]},
        user=f"{security['runAsUser']}:{security['runAsGroup']}",
        host_config=host_config,
        labels={LABEL: owner},
    )
    return str(created["Id"])


def _containers(pod_spec: dict[str, Any]) -> list[tuple[bool, dict[str, Any]]]:
    """The pod's containers in the order the kubelet starts them, each with "is it an init
    container"."""
    return [(True, c) for c in pod_spec.get("initContainers", [])] + [
        (False, c) for c in pod_spec["containers"]
    ]


@dataclass(frozen=True)
class PodRun:
    """What each container did (only those that ran), and each one's termination log after."""

    containers: dict[str, ContainerRun]
    termination_logs: dict[str, bytes]


def run_pod(api: Any, job: dict[str, Any], configmap: dict[str, Any]) -> PodRun:
    """Run the Job's pod to its end."""
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    runs: dict[str, ContainerRun] = {}
    logs: dict[str, bytes] = {}
    owner = f"pod-{uuid.uuid4().hex[:12]}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        pod_volumes(api, pod_spec, configmap, owner) as sources,
    ):
        for _init, container in _containers(pod_spec):
            termination_log = _termination_log(tmp, container["name"])
            container_id = create_container(
                api, pod_spec, container, sources, termination_log, owner
            )
            try:
                api.start(container_id)
                status = api.wait(container_id, timeout=CONTAINER_TIMEOUT_S)
                log = api.logs(container_id, stdout=True, stderr=True)
            finally:
                api.remove_container(container_id, force=True)
            runs[container["name"]] = ContainerRun(status["StatusCode"], log)
            logs[container["name"]] = termination_log.read_bytes()
            if status["StatusCode"] != 0:
                break  # the pod failed: nothing after it starts
    return PodRun(runs, logs)


class DockerKubelet:
    """Plays the Job controller and the kubelet for every Job created in the emulator: runs
    its pod's containers on Docker, one after another, streams each container's log into the
    emulator's pod logs as it is written, reports the containers' states, and kills what
    runs once its Job is deleted. ``close`` removes whatever it made that is left."""

    def __init__(self, emulator: Emulator, api_client: Any, logs: Logs, docker_api: Any) -> None:
        self.emulator, self.api_client, self.logs, self.api = emulator, api_client, logs, docker_api
        self.namespace = "evalplatform-sandbox"
        self.owner = f"kubelet-{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._seen: set[str] = set()
        self._pods: list[threading.Thread] = []
        self._watcher = threading.Thread(target=self._watch, name="docker-kubelet", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(10)
        for pod in self._pods:
            pod.join(CLOSE_WAIT_S)
        # A pod the engine was slow to kill (a fork bomb's) leaves its containers behind.
        for container in self.containers():
            self.api.remove_container(container["Id"], force=True)
        for volume in self.api.volumes(filters={"label": f"{LABEL}={self.owner}"})["Volumes"] or []:
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_volume(volume["Name"], force=True)

    def containers(self) -> list[dict[str, Any]]:
        """The containers of its pods still on the engine."""
        return list(self.api.containers(all=True, filters={"label": f"{LABEL}={self.owner}"}))

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            for name in self.emulator.names(JOBS, self.namespace):
                if name not in self._seen:
                    self._seen.add(name)
                    pod = threading.Thread(target=self._run_pod, args=(name,), daemon=True)
                    self._pods.append(pod)
                    pod.start()

    def _job_gone(self, name: str) -> bool:
        return self._stop.is_set() or self.emulator.get(JOBS, self.namespace, name) is None

    def _run_pod(self, name: str) -> None:
        job = self.emulator.get(JOBS, self.namespace, name)
        configmap = self.emulator.get(CONFIGMAPS, self.namespace, name)
        if job is None or configmap is None:
            return  # cancelled before its pod was made
        player = KubeletPlayer(self.api_client, self.namespace, job)
        pod_spec = job["spec"]["template"]["spec"]
        player.create_pod()
        player.scheduled()
        with (
            tempfile.TemporaryDirectory() as tmp,
            pod_volumes(self.api, pod_spec, configmap, self.owner) as sources,
        ):
            for init, container in _containers(pod_spec):
                if self._job_gone(name):
                    return
                termination_log = _termination_log(tmp, container["name"])
                container_id = create_container(
                    self.api, pod_spec, container, sources, termination_log, self.owner
                )
                try:
                    code, reason = self._run_container(name, player, container_id, init)
                finally:
                    self.api.remove_container(container_id, force=True)
                if init:
                    player.compile_ended(code, reason)
                else:
                    player.terminated(code, reason)
                if code != 0:
                    return

    def _run_container(
        self, name: str, player: KubeletPlayer, container_id: str, init: bool
    ) -> tuple[int, str]:
        """Start the container, follow its log into the emulator until it ends (or its Job
        is deleted, which kills it); its exit code and terminated reason."""
        feed = self.logs.feed(player.pod_name, "compile" if init else "session")
        self.api.start(container_id)
        stream = self.api.logs(container_id, stream=True, follow=True)
        watcher = threading.Thread(target=self._watch_container, args=(name, container_id, stream))
        watcher.start()
        if init:
            player.compiling()
        else:
            player.running()
        try:
            for chunk in stream:
                feed.write(chunk)
        finally:
            feed.close()
        code = int(self.api.wait(container_id, timeout=CONTAINER_TIMEOUT_S)["StatusCode"])
        watcher.join()
        state = self.api.inspect_container(container_id)["State"]
        reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
        return code, reason

    def _watch_container(self, name: str, container_id: str, stream: Any) -> None:
        """Kill the container once its Job is deleted; end its log stream once it has
        stopped, which the engine's follow does not always do for a killed container."""
        with contextlib.suppress(docker.errors.APIError):  # it ended and is gone already
            while self.api.inspect_container(container_id)["State"].get("Running"):
                if self._job_gone(name):
                    self.api.kill(container_id)
                self._stop.wait(0.05)
        self._stop.wait(STREAM_END_WAIT_S)
        stream.close()
