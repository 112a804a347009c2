"""A Kubernetes API emulator (kmock) on a loopback port, run in a thread with its own loop.

kmock's pytest plugin needs pytest-asyncio, which this project does not use; the emulator is
a real aiohttp HTTP server, so a background event loop is all it takes. Tests talk to it
with a real ``kubernetes.client.ApiClient`` and play the Job controller and the kubelet
themselves through ``Emulator`` (create the Pod, patch statuses, answer pod logs).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import kmock
from kmock import KubernetesEmulator

JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
PLAYER_AGENT = "evalplatform-tests/kubelet-player"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Emulator:
    """The emulator, its URL and thread-safe helpers to read and change its objects."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.kmock: Any = None
        self.url = ""
        self.thread = threading.Thread(target=self._serve, name="kube-emulator", daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Kubernetes emulator did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            self.kmock = emulator
            self.url = str(server.url).rstrip("/")
            # Declare the resources the backend uses, so that empty lists answer 200.
            for resource in (JOBS, PODS, CONFIGMAPS):
                emulator.resources[resource] = kmock.ResourceInfo(namespaced=True)
            self._ready.set()
            await self._stop.wait()

    def close(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)

    def call(self, coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run ``coro_fn()`` on the emulator's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(10)

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return fn()

        return self.call(wrapper)

    # -- objects, as the API server holds them

    def get(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            key = (resource, namespace, name)
            if key not in self.kmock.objects or self.kmock.objects[key].deleted:
                return None
            return copy.deepcopy(dict(self.kmock.objects[key].raw))

        return self.on_loop(read)

    def names(self, resource: Any, namespace: str) -> list[str]:
        def read() -> list[str]:
            return sorted(
                name
                for (res, ns, name), obj in list(self.kmock.objects.items())
                if res == resource and ns == namespace and not obj.deleted
            )

        return self.on_loop(read)

    def put(self, resource: Any, namespace: str, body: dict[str, Any]) -> None:
        """Store an object directly (as if another client had created it)."""

        def write() -> None:
            self.kmock.objects[resource, namespace, body["metadata"]["name"]] = body

        self.on_loop(write)

    def wait_for(self, resource: Any, namespace: str, name: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.get(resource, namespace, name)
            if found is not None:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{name} was never created")

    def wait_gone(self, resource: Any, namespace: str, name: str, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get(resource, namespace, name) is None:
                return True
            time.sleep(0.02)
        return False


class KubeletPlayer:
    """Plays the Job controller and the kubelet for one Job, through the HTTP API.

    Writes go through the emulator's HTTP API (as the controllers would), so the backend's
    watches see them as ``ADDED``/``MODIFIED`` events.
    """

    def __init__(self, api_client: Any, namespace: str, job: dict[str, Any]) -> None:
        from kubernetes import client

        # Its own client and user agent, so tests can tell its requests from the backend's.
        own = client.ApiClient(api_client.configuration)
        own.user_agent = PLAYER_AGENT
        self.core = client.CoreV1Api(own)
        self.batch = client.BatchV1Api(own)
        self.namespace = namespace
        self.job = job
        self.pod_name = f"{job['metadata']['name']}-x7k2p"

    def create_pod(self) -> dict[str, Any]:
        """Create the Job's Pod from its template, Pending and unscheduled."""
        template = self.job["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.pod_name,
                "namespace": self.namespace,
                "labels": {
                    **template["metadata"]["labels"],
                    "job-name": self.job["metadata"]["name"],
                },
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": self.job["metadata"]["name"],
                        "uid": self.job["metadata"].get("uid", "job-uid"),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"],
            "status": {"phase": "Pending", "qosClass": "Guaranteed"},
        }
        from kubernetes.client import V1Pod

        body = V1Pod.from_dict(pod)
        assert body is not None
        self.core.create_namespaced_pod(self.namespace, body)
        self.patch_job({"status": {"active": 1, "startTime": now()}})
        return pod

    def patch_pod(self, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod(self.pod_name, self.namespace, {"status": status})

    def patch_job(self, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.patch_namespaced_job(self.job["metadata"]["name"], self.namespace, body)
        except ApiException as exc:
            # Once the program has ended the backend may delete the Job before the
            # controller gets to mark it finished, as on a real cluster.
            if exc.status != 404:
                raise

    # -- realistic status payloads (shapes from the Pod and Job API reference)

    @property
    def compiles(self) -> bool:
        return bool(self.job["spec"]["template"]["spec"].get("initContainers"))

    def _inits(self, state: dict[str, Any] | None) -> dict[str, Any]:
        """The init container's status field, when the pod has one."""
        return {"initContainerStatuses": [state]} if self.compiles and state else {}

    def scheduled(self) -> None:
        self.patch_pod(
            {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}
                ],
                **self._inits(self._waiting("compile", "PodInitializing")),
                "containerStatuses": [self._waiting("session", "PodInitializing")],
            }
        )

    def unschedulable(self, message: str) -> None:
        self.patch_pod(
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastTransitionTime": now(),
                    }
                ],
            }
        )

    def image_error(self, reason: str, message: str) -> None:
        first = "compile" if self.compiles else "session"
        waiting = self._waiting(first, reason, message)
        self.patch_pod(
            {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                **self._inits(waiting),
                "containerStatuses": [
                    waiting if first == "session" else self._waiting("session", "PodInitializing")
                ],
            }
        )

    def compiling(self) -> None:
        started = now()
        self.patch_pod(
            {
                "phase": "Pending",
                "startTime": started,
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "initContainerStatuses": [
                    {**self._base("compile"), "state": {"running": {"startedAt": started}}}
                ],
                "containerStatuses": [self._waiting("session", "PodInitializing")],
            }
        )

    def compile_ended(self, exit_code: int, reason: str = "") -> None:
        """The init container ended; with a failure the pod fails and the cases never start."""
        reason = reason or ("Completed" if exit_code == 0 else "Error")
        self.patch_pod(
            {
                "phase": "Pending" if exit_code == 0 else "Failed",
                "initContainerStatuses": [self._terminated("compile", exit_code, reason)],
                "containerStatuses": [self._waiting("session", "PodInitializing")],
            }
        )

    def running(self) -> None:
        started = now()
        self.patch_pod(
            {
                "phase": "Running",
                "startTime": started,
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                **self._inits(self._terminated("compile", 0, "Completed")),
                "containerStatuses": [
                    {**self._base("session"), "state": {"running": {"startedAt": started}}}
                ],
            }
        )
        self.patch_job({"status": {"active": 1, "ready": 1}})

    def terminated(self, exit_code: int, reason: str = "") -> None:
        reason = reason or ("Completed" if exit_code == 0 else "Error")
        phase = "Succeeded" if exit_code == 0 else "Failed"
        self.patch_pod(
            {
                "phase": phase,
                **self._inits(self._terminated("compile", 0, "Completed")),
                "containerStatuses": [self._terminated("session", exit_code, reason)],
            }
        )

    def job_complete(self) -> None:
        self.patch_job(
            {
                "status": {
                    "active": 0,
                    "succeeded": 1,
                    "completionTime": now(),
                    "conditions": [
                        {
                            "type": "SuccessCriteriaMet",
                            "status": "True",
                            "lastTransitionTime": now(),
                        },
                        {"type": "Complete", "status": "True", "lastTransitionTime": now()},
                    ],
                }
            }
        )

    def job_failed(self, reason: str, message: str) -> None:
        self.patch_job(
            {
                "status": {
                    "active": 0,
                    "failed": 1,
                    "conditions": [
                        {
                            "type": "FailureTarget",
                            "status": "True",
                            "reason": reason,
                            "message": message,
                        },
                        {
                            "type": "Failed",
                            "status": "True",
                            "reason": reason,
                            "message": message,
                            "lastTransitionTime": now(),
                        },
                    ],
                }
            }
        )

    def delete_pod(self) -> None:
        self.core.delete_namespaced_pod(self.pod_name, self.namespace)

    def _base(self, name: str) -> dict[str, Any]:
        image = self.job["spec"]["template"]["spec"]["containers"][0]["image"]
        return {"name": name, "image": image, "imageID": "", "ready": False, "restartCount": 0}

    def _waiting(self, name: str, reason: str, message: str = "") -> dict[str, Any]:
        waiting = {"reason": reason, **({"message": message} if message else {})}
        return {**self._base(name), "state": {"waiting": waiting}}

    def _terminated(self, name: str, exit_code: int, reason: str) -> dict[str, Any]:
        return {
            **self._base(name),
            "state": {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": now(),
                    "finishedAt": now(),
                    "containerID": f"containerd://{name}",
                }
            },
        }


class LogFeed:
    """One container's log as the kubelet serves it with ``follow=true``: what was written so
    far, then whatever is written until ``close()`` (the container's end)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._closed = False
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._data += data

    def close(self) -> None:
        with self._lock:
            self._closed = True

    async def serve(self, limit: int | None) -> AsyncIterator[bytes]:
        yield b""  # the headers go out at once, as the kubelet's do
        sent = 0
        while True:
            with self._lock:
                chunk, closed = bytes(self._data[sent:]), self._closed
            if limit is not None:
                chunk = chunk[: max(0, limit - sent)]
            if chunk:
                sent += len(chunk)
                yield chunk
            elif closed or (limit is not None and sent >= limit):
                return
            else:
                await asyncio.sleep(0.01)


class Logs:
    """Pod logs by pod and container, served by the emulator honouring ``limitBytes``."""

    def __init__(self) -> None:
        self.feeds: dict[tuple[str, str], LogFeed] = {}
        self._lock = threading.Lock()

    def feed(self, pod: str, container: str) -> LogFeed:
        with self._lock:
            return self.feeds.setdefault((pod, container), LogFeed())

    def answer(self, request: Any) -> AsyncIterator[bytes]:
        pod = str(request.url.path).split("/")[-2]
        limit = request.params.get("limitBytes")
        return self.feed(pod, request.params.get("container", "")).serve(
            int(limit) if limit else None
        )


def configmap_files(configmap: dict[str, Any], job: dict[str, Any]) -> dict[str, dict[str, bytes]]:
    """What each container would see: container -> mounted path -> bytes, from the ConfigMap
    and the volumes."""
    data = {key: base64.b64decode(value) for key, value in configmap["binaryData"].items()}
    spec = job["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    seen: dict[str, dict[str, bytes]] = {}
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        files = seen.setdefault(container["name"], {})
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            for item in volume.get("configMap", {}).get("items", []):
                files[f"{mount['mountPath']}/{item['path']}"] = data[item["key"]]
    return seen


def iter_until(predicate: Callable[[], bool], timeout: float = 10) -> Iterator[None]:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.02)
        yield
