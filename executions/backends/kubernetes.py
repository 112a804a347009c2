"""Run sandboxes as Kubernetes ``batch/v1`` Jobs; the only module that talks to a cluster.

Every object is rendered from the request's ``SandboxPolicy`` by ``configmap_for`` and
``job_for`` (nothing else sets a field). A run goes:

1. take one of ``max_concurrent_per_worker`` slots of this worker process;
2. create a ConfigMap holding the code files and stdin (``binaryData``, so any bytes
   survive), then the Job, then make the Job the ConfigMap's owner so the garbage collector
   removes both together;
3. follow the Job and its Pod with watches (label and field selectors, server-side
   ``timeout_seconds``, resumed on expiry) while following each container's log with a
   byte cap; the wall deadline starts when the program's container is seen running;
4. delete the Job (``propagationPolicy: Background``, so its Pod goes too) and the
   ConfigMap, on every path.

The pod meets the Pod Security Standard *restricted*: uid/gid 65534, ``runAsNonRoot``,
``RuntimeDefault`` seccomp, all capabilities dropped, no privilege escalation, read-only
root, no service-account token, no service links, no host namespaces or paths, only
``configMap`` and ``emptyDir`` volumes, requests equal to limits. The network is denied by
the sandbox namespace's deny-all NetworkPolicy (``deploy/kubernetes``), which selects pods by
``app.kubernetes.io/component: sandbox``; this module does not widen it, even for a runtime
with ``network`` on (widening egress is the operator's decision, in that policy).

Semantics callers rely on:

* **Streams.** A container's log carries its stdout and stderr interleaved, so the program's
  stderr is sent elsewhere: an init container makes a FIFO in a small memory-backed
  ``emptyDir``, the program's container runs ``"$@" 2>FIFO <stdin`` and a second container
  (``stderr``) copies the FIFO to its own log. ``stdout`` is the ``program`` container's log,
  ``stderr`` the ``stderr`` container's. Runtime images need ``/bin/sh``, ``mkfifo`` and
  ``cat`` (Debian's and the official Python images have them). The shell stays the
  container's PID 1 and the program its child, so a program can die by a signal (PID 1 of a
  namespace ignores signals it has no handler for).
* **Stdin** is a file in the ConfigMap, mounted read-only at ``/sandbox/stdin``; the program
  reads it to EOF. Code files are mounted read-only (0444) at ``policy.code_dir``, the
  working directory. Files and stdin together must fit in a ConfigMap (about 1 MiB).
* **Output cap.** ``limits.output_bytes`` applies to stdout and stderr separately; logs are
  read with ``limitBytes = cap + 1``. One byte more on either stream sets that stream's flag,
  stops reading and deletes the Job.
* **Time.** The wall deadline is ``wall_time_ms`` after the program's container is first
  seen running; past it the Job is deleted and ``timed_out`` set. The Job's own
  ``activeDeadlineSeconds`` (wall time rounded up, plus ``pending_timeout_s`` for scheduling
  and image pulls) stops it even if this worker dies; a Job ``Failed`` with reason
  ``DeadlineExceeded`` is reported as ``timed_out`` too. ``wall_time_ms`` is the container's
  startedAt→finishedAt (the API's one-second resolution) when it ended by itself, else the
  runner's clock; a program that ended by itself but took longer than its wall time is still
  marked ``timed_out`` (by ``ExecutionBackend.run``).
* **Exit status.** ``exit_code`` is the program container's terminated ``exitCode``; codes
  ``128 + N`` also set ``signal = N``, as the Docker backend does. Kills made by the runner
  (deadline, output cap) leave both unset. ``oom_killed`` is the terminated reason
  ``OOMKilled``. ``peak_memory_bytes`` is not measured.
* **Pending.** A pod that cannot be scheduled (``PodScheduled`` False, e.g. Unschedulable)
  or has not started after ``pending_timeout_s`` fails with ``BACKEND_ERROR`` naming the last
  reason; image and container-config errors (``ErrImagePull``, ``ImagePullBackOff``,
  ``InvalidImageName``, ``CreateContainerConfigError``, ...) fail at once.
* **Cancel.** ``cancel(handle)`` deletes the Job (and its Pod and ConfigMap) from any
  process. A run that sees its Job deleted by someone else returns ``CANCELLED`` with the
  output read so far; so does a run whose Pod vanished before the program ended.
* **Conflicts.** If a Job or ConfigMap with the run's name already exists (an earlier
  attempt whose worker died, or two workers given the same handle), the run fails with
  ``BACKEND_ERROR`` and leaves the existing objects alone: they are not this run's to adopt
  or delete (``remove_orphans`` clears them once they are old).
* **Failures** of the infrastructure come back as ``RunResult.failure``: ``UNAVAILABLE``
  when the API server cannot be reached or answers 5xx, ``BACKEND_ERROR`` for refusals
  (401/403 name the ServiceAccount's RBAC or the namespace's ResourceQuota), invalid
  objects, conflicts and pods that cannot start. ``run`` never raises for them.

Only ``jobs`` (batch), ``pods``, ``pods/log`` and ``configmaps`` in the sandbox namespace are
used, which is all the platform's Role grants. The cluster configuration is loaded lazily, by
the Kubernetes client from its own environment: in the cluster with the pod's ServiceAccount
(``KUBERNETES_SERVICE_HOST``) when that works, else from the ``kubeconfig`` option or the
client's default (``KUBECONFIG``, else ``~/.kube/config``); tests may inject ``api_client`` or
``host``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import urllib3
from django.core.exceptions import ImproperlyConfigured
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION

from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
)
from sandbox.files import safe_relative
from sandbox.options import OptionError

logger = logging.getLogger(__name__)

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "evalplatform"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "sandbox"
EXECUTION_LABEL = "evalplatform.io/execution"
HANDLE_LABEL = "evalplatform.io/handle"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={COMPONENT}"

DEFAULT_NAMESPACE = "evalplatform-sandbox"
DEFAULT_SERVICE_ACCOUNT = "evalplatform-sandbox"

PROGRAM = "program"
STDERR = "stderr"
PREPARE = "prepare"
STDIN_DIR = "/sandbox/stdin"
STDIN_KEY = "stdin"
PIPE_DIR = "/sandbox/stderr"
PIPE = f"{PIPE_DIR}/pipe"
# The program's stderr goes to the FIFO the stderr container copies to its log. The shell
# stays PID 1 (no exec) so the program, its child, can be killed by a signal; ``exit $?``
# keeps shells that exec the last command of ``-c`` from replacing themselves.
PROGRAM_SCRIPT = f'"$@" 2>{PIPE} <{STDIN_DIR}/{STDIN_KEY}; exit $?'
PREPARE_SCRIPT = f"mkfifo -m 0600 {PIPE}"
STDERR_SCRIPT = f"exec cat {PIPE}"
# Small fixed resources for the helper containers; requests equal limits (Guaranteed QoS).
HELPER_RESOURCES = {"cpu": "100m", "memory": "16Mi", "ephemeral-storage": "16Mi"}
MIB = 1024 * 1024
# A ConfigMap may not exceed 1 MiB, base64 included; keep room for keys and metadata.
CONFIGMAP_BUDGET = MIB - 16 * 1024

# Waiting reasons that will not fix themselves: fail at once instead of waiting.
START_FAILURES = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class KubernetesUnavailable(Exception):
    """The API server could not be reached or answered with a server error."""


class _Failure(Exception):
    """Ends a run with ``RunResult.failure(kind, message)``."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --- rendering: the only place the objects' fields are chosen ---------------------------------


def resource_name(handle: str) -> str:
    """The Job's (and ConfigMap's) name for ``handle``: a DNS-1123 label of at most 63
    characters. Handles that are not one already get a hash suffix, so names stay unique."""
    name = re.sub(r"[^a-z0-9-]+", "-", handle.lower()).strip("-")
    if name == handle and 0 < len(name) <= 63:
        return name
    digest = hashlib.sha256(handle.encode()).hexdigest()[:10]
    return f"{name[:52].strip('-') or 'sandbox'}-{digest}"


def labels_for(request: RunRequest) -> dict[str, str]:
    """Labels on the Job, its Pod template and its ConfigMap. The request's own labels are
    kept when they are valid Kubernetes labels; ours always win."""
    extra = {
        key: value
        for key, value in request.labels.items()
        if _LABEL_KEY.fullmatch(key) and len(key) <= 253 and _LABEL_VALUE.fullmatch(value)
    }
    return {
        **extra,
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: COMPONENT,
        EXECUTION_LABEL: str(request.execution_id),
        HANDLE_LABEL: resource_name(request.handle),
    }


def configmap_for(request: RunRequest, namespace: str) -> dict[str, Any]:
    """The ConfigMap with the code files (keys ``f0``, ``f1``, ... in file-name order) and
    stdin (key ``stdin``), base64 in ``binaryData``. Raises ``ValueError`` for an unsafe file
    name or when the content does not fit in a ConfigMap."""
    for name in request.files:
        safe_relative(name)
    data = {f"f{index}": request.files[name] for index, name in enumerate(sorted(request.files))}
    data[STDIN_KEY] = request.stdin
    encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
    # The API server's limit is on the stored object, where binaryData is base64 (4/3).
    size = sum(len(value) for value in encoded.values())
    if size > CONFIGMAP_BUDGET:
        raise ValueError(
            f"the code and stdin take {size} bytes in base64; the Kubernetes backend delivers "
            f"them in a ConfigMap, which holds at most {CONFIGMAP_BUDGET} bytes"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": resource_name(request.handle),
            "namespace": namespace,
            "labels": labels_for(request),
        },
        "immutable": True,
        "binaryData": encoded,
    }


def _quantity_mib(n_bytes: int) -> str:
    return f"{max(1, math.ceil(n_bytes / MIB))}Mi"


def _container_security(uid: int, gid: int) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --- options ----------------------------------------------------------------------------------


def parse_node_selector(value: str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(value, Mapping):
        return dict(value)
    selector: dict[str, str] = {}
    for pair in (part.strip() for part in value.split(",")):
        if not pair:
            continue
        key, sep, val = pair.partition("=")
        if (
            not sep
            or not _LABEL_KEY.fullmatch(key.strip())
            or not _LABEL_VALUE.fullmatch(val.strip())
        ):
            raise ValueError(
                f"EXECUTION_KUBERNETES_NODE_SELECTOR must be key=value pairs separated by "
                f"commas, got {value!r}"
            )
        selector[key.strip()] = val.strip()
    return selector


def parse_tolerations(value: str | Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    if isinstance(value, str):
        if not value.strip():
            return ()
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(
                f"EXECUTION_KUBERNETES_TOLERATIONS must be a JSON list of tolerations: {exc}"
            ) from exc
    if not isinstance(value, list | tuple) or not all(isinstance(t, Mapping) for t in value):
        raise ValueError(
            "EXECUTION_KUBERNETES_TOLERATIONS must be a JSON list of toleration objects, "
            f"got {value!r}"
        )
    return tuple(dict(toleration) for toleration in value)


@dataclass(frozen=True)
class KubernetesOptions:
    """The Kubernetes backend's options and their defaults (``EXECUTION_KUBERNETES_*`` in
    settings). The first eight are the operator's cluster-specific choices that ``job_for``
    renders; the rest govern a run."""

    namespace: str = DEFAULT_NAMESPACE
    # The sandbox pods' ServiceAccount; its token is never mounted.
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    # e.g. gvisor; empty is the cluster's default.
    runtime_class: str = ""
    # "k=v,k2=v2" or a mapping.
    node_selector: Mapping[str, str] = field(
        default_factory=dict, metadata={"convert": parse_node_selector}
    )
    # A JSON list, or a list of toleration objects.
    tolerations: Sequence[Mapping[str, Any]] = field(
        default=(), metadata={"convert": parse_tolerations}
    )
    # A comma-separated string or a list of Secret names.
    image_pull_secrets: tuple[str, ...] = ()
    # Seconds a pod may take to be scheduled and started, images pulled.
    pending_timeout_s: int = 60
    ttl_seconds_after_finished: int = 300
    # Runs at once in this worker process.
    max_concurrent_per_worker: int = 8
    # Seconds to wait for the logs after the program ended.
    grace_s: float = 5.0
    # Seconds a run waits for a free slot before it fails as UNAVAILABLE.
    slot_wait_s: float = 30.0
    watch_timeout_s: int = 30
    # An API URL without credentials (tests); empty means the client's own configuration:
    # in the cluster with the pod's ServiceAccount, else a kubeconfig.
    host: str = ""
    # The kubeconfig file; empty means the client's default ($KUBECONFIG, ~/.kube/config).
    kubeconfig: str = ""

    def __post_init__(self) -> None:
        if self.max_concurrent_per_worker < 1:
            raise OptionError(
                "max_concurrent_per_worker",
                "EXECUTION_KUBERNETES_MAX_CONCURRENT (max_concurrent_per_worker) must be at "
                f"least 1, got {self.max_concurrent_per_worker}",
            )


def job_for(request: RunRequest, options: KubernetesOptions) -> dict[str, Any]:
    """Return the ``batch/v1`` Job for ``request``, in the API's names.

    Everything comes from ``request.policy``, the catalogue's image and command, and the
    operator's ``options``; the policy's ``runtime_class`` overrides the option's.
    """
    policy = request.policy
    limits = policy.limits
    uid, gid = policy.user
    name = resource_name(request.handle)
    labels = labels_for(request)
    files = sorted(request.files)
    program_resources = {
        "cpu": f"{max(1, round(limits.cpus * 1000))}m",
        "memory": f"{limits.memory_mb}Mi",
        # Container logs count against ephemeral storage: room for the capped output twice
        # over (what is read past the cap before the kill), the root is read-only and
        # scratch is memory-backed.
        "ephemeral-storage": _quantity_mib(4 * limits.output_bytes + 8 * MIB),
    }
    code_mounts = [
        {"name": "code", "mountPath": policy.code_dir, "readOnly": True},
        {"name": "stdin", "mountPath": STDIN_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": policy.scratch_dir},
        {"name": "stderr-pipe", "mountPath": PIPE_DIR},
    ]
    helper_env = [{"name": "PATH", "value": policy.environment.get("PATH", "/usr/bin:/bin")}]

    def helper(container: str, script: str) -> dict[str, Any]:
        """A small container of the stderr plumbing, sharing only the FIFO's volume."""
        return {
            "name": container,
            "image": request.image,
            "command": ["/bin/sh", "-c", script],
            "env": helper_env,
            "resources": {"requests": HELPER_RESOURCES, "limits": HELPER_RESOURCES},
            "securityContext": _container_security(uid, gid),
            "volumeMounts": [{"name": "stderr-pipe", "mountPath": PIPE_DIR}],
        }

    pod_spec: dict[str, Any] = {
        "serviceAccountName": options.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "restartPolicy": "Never",
        # The shell (PID 1) ignores SIGTERM; a deleted sandbox has nothing to save.
        "terminationGracePeriodSeconds": 0,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "fsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [helper(PREPARE, PREPARE_SCRIPT)],
        "containers": [
            {
                "name": PROGRAM,
                "image": request.image,
                # Exactly the catalogue's command, behind a shell that wires up the streams.
                "command": ["/bin/sh", "-c", PROGRAM_SCRIPT, "evalplatform-sandbox"],
                "args": list(request.command),
                "workingDir": policy.code_dir,
                "env": [{"name": key, "value": value} for key, value in policy.environment.items()],
                "resources": {"requests": program_resources, "limits": program_resources},
                "securityContext": _container_security(uid, gid),
                "volumeMounts": code_mounts,
            },
            helper(STDERR, STDERR_SCRIPT),
        ],
        "volumes": [
            {
                "name": "code",
                "configMap": {
                    "name": name,
                    "defaultMode": 0o444,
                    "items": [
                        {"key": f"f{index}", "path": str(safe_relative(file_name))}
                        for index, file_name in enumerate(files)
                    ],
                },
            },
            {
                "name": "stdin",
                "configMap": {
                    "name": name,
                    "defaultMode": 0o444,
                    "items": [{"key": STDIN_KEY, "path": STDIN_KEY}],
                },
            },
            {
                "name": "scratch",
                "emptyDir": {"medium": "Memory", "sizeLimit": f"{limits.scratch_mb}Mi"},
            },
            {"name": "stderr-pipe", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ],
    }
    runtime_class = policy.runtime_class or options.runtime_class
    if runtime_class:
        pod_spec["runtimeClassName"] = runtime_class
    if options.node_selector:
        pod_spec["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        pod_spec["tolerations"] = [dict(toleration) for toleration in options.tolerations]
    if options.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in options.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": options.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": math.ceil(limits.wall_time_s) + options.pending_timeout_s,
            "ttlSecondsAfterFinished": options.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


# --- following a run ---------------------------------------------------------------------------


class _LogFollower:
    """Follows one container's log in a thread, keeping at most ``cap`` bytes."""

    def __init__(
        self, core: Any, namespace: str, pod: str, container: str, cap: int, events: queue.Queue
    ) -> None:
        self.core, self.namespace, self.pod, self.container = core, namespace, pod, container
        self.cap = cap
        self.events = events
        self.data = bytearray()
        self.truncated = False
        self.done = False
        self._lock = threading.Lock()
        self._response: Any = None
        self._stopped = False
        self.thread = threading.Thread(target=self._follow, name=f"kube-log-{pod}", daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        error: BaseException | None = None
        try:
            response = self.core.read_namespaced_pod_log(
                self.pod,
                self.namespace,
                container=self.container,
                follow=True,
                limit_bytes=self.cap + 1,
                _preload_content=False,
            )
            with self._lock:
                self._response = response
                if self._stopped:
                    return
            for chunk in response.stream(64 * 1024, decode_content=False):
                room = self.cap - len(self.data)
                self.data += chunk[:room]
                if len(chunk) > room:
                    self.truncated = True
                    break
        except Exception as exc:
            error = exc
        finally:
            self._close()
            self.done = True
            if not self._stopped:
                self.events.put(("log", self.container, error))

    def _close(self) -> None:
        with self._lock:
            response, self._response = self._response, None
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
            with contextlib.suppress(Exception):
                response.release_conn()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._close()


class _Watcher:
    """Watches one kind of object in a thread and puts ``(kind, type, object)`` on a queue.

    Each stream starts without a resource version, so it opens with the current state
    (synthetic ``ADDED`` events) and a resumed watch can never miss a transition. Selectors
    narrow what the server sends; ``accept`` re-checks, since not every server applies them.
    """

    def __init__(
        self,
        kind: str,
        list_fn: Any,
        namespace: str,
        selectors: dict[str, str],
        accept: Any,
        events: queue.Queue,
        timeout_s: int,
    ) -> None:
        self.kind, self.list_fn, self.namespace = kind, list_fn, namespace
        self.selectors, self.accept, self.events = selectors, accept, events
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self.thread = threading.Thread(target=self._run, name=f"kube-watch-{kind}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._watch = watch.Watch()
            try:
                for event in self._watch.stream(
                    self.list_fn,
                    self.namespace,
                    timeout_seconds=self.timeout_s,
                    # Also bounds a server that ignores timeout_seconds, or a dead connection.
                    _request_timeout=(10, self.timeout_s + 5),
                    deserialize=False,
                    **self.selectors,
                ):
                    if self._stop.is_set():
                        return
                    obj = event.get("object") or {}
                    if self.accept(obj):
                        self.events.put((self.kind, event.get("type"), obj))
            except ApiException as exc:
                if self._stop.is_set():
                    return
                if exc.status == 410:  # expired: start again from the current state
                    continue
                self.events.put(("error", self.kind, exc))
                return
            except urllib3.exceptions.ReadTimeoutError:
                continue  # resume
            except Exception as exc:
                if not self._stop.is_set():
                    self.events.put(("error", self.kind, exc))
                return

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()


@dataclass
class _Progress:
    """What the run has learnt so far."""

    created_at: float
    events: queue.Queue
    started_at: float | None = None  # monotonic, when the program was first seen running
    terminated: dict[str, Any] | None = None  # the program's terminated state
    terminated_seen: float | None = None
    pending_reason: str = ""
    pod_name: str = ""
    pod_gone: bool = False
    followers: dict[str, _LogFollower] = field(default_factory=dict)


def _conditions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def _statuses(pod: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {s.get("name", ""): s for s in (pod.get("status") or {}).get(key) or []}


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- the backend -------------------------------------------------------------------------------


class KubernetesBackend(ExecutionBackend):
    """Runs each request as a hardened Kubernetes Job in the sandbox namespace.

    Options: ``KubernetesOptions``; tests may also inject ``api_client`` (a
    ``kubernetes.client.ApiClient``). See the module docstring for the semantics of a run.
    """

    name = "kubernetes"
    options_class = KubernetesOptions
    options: KubernetesOptions

    def __init__(self, *, api_client: Any = None, **options: Any) -> None:
        super().__init__(**options)
        # A pod may wait this long to be scheduled and pull its image before the wall time runs.
        self.start_allowance_s = float(self.options.pending_timeout_s)
        self.slot_wait_s = self.options.slot_wait_s
        self._api_client: Any = api_client
        self._client_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.options.max_concurrent_per_worker)

    @property
    def namespace(self) -> str:
        return self.options.namespace

    # -- cluster access

    def api_client(self) -> Any:
        """The shared ``ApiClient``, configured on first use; raises ``ImproperlyConfigured``."""
        with self._client_lock:
            if self._api_client is None:
                self._api_client = client.ApiClient(self._configuration())
            return self._api_client

    def _configuration(self) -> Any:
        configuration = client.Configuration()
        if self.options.host:
            configuration.host = self.options.host
        else:
            self._load_cluster_configuration(configuration)
        # Several watches and log streams per run share the pool.
        configuration.connection_pool_maxsize = max(10, 6 * self.options.max_concurrent_per_worker)
        return configuration

    def _load_cluster_configuration(self, configuration: Any) -> None:
        """In the cluster with the pod's ServiceAccount, else from a kubeconfig. The client
        reads its own environment (``KUBERNETES_SERVICE_HOST``, ``KUBECONFIG``)."""
        try:
            config.load_incluster_config(client_configuration=configuration)
            return
        except ConfigException as exc:
            in_cluster = exc
        path = self.options.kubeconfig
        try:
            config.load_kube_config(config_file=path or None, client_configuration=configuration)
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            where = (
                f"kubeconfig {path!r}" if path else f"KUBECONFIG ({KUBE_CONFIG_DEFAULT_LOCATION})"
            )
            raise ImproperlyConfigured(
                f"No usable Kubernetes configuration from {where}: {exc}; nor in the cluster "
                f"(KUBERNETES_SERVICE_HOST, the platform's ServiceAccount token): {in_cluster}. "
                "Set KUBECONFIG, or run the platform in the cluster with its ServiceAccount."
            ) from exc

    @property
    def api_host(self) -> str:
        if self._api_client is not None:
            return str(self._api_client.configuration.host)
        return self.options.host or "the Kubernetes API"

    def _apis(self) -> tuple[Any, Any]:
        api = self.api_client()
        return client.CoreV1Api(api), client.BatchV1Api(api)

    # -- the contract

    def _run(self, request: RunRequest) -> RunResult:
        try:
            core, batch = self._apis()
        except ImproperlyConfigured as exc:
            return RunResult.failure(ErrorKind.BACKEND_ERROR, str(exc), handle=request.handle)
        if not self._slots.acquire(timeout=self.options.slot_wait_s):
            return RunResult.failure(
                ErrorKind.UNAVAILABLE,
                f"All {self.options.max_concurrent_per_worker} Kubernetes sandbox slots of this "
                f"worker stayed busy for {self.options.slot_wait_s:g} s; retry later or raise "
                "max_concurrent_per_worker.",
                handle=request.handle,
            )
        try:
            return self._run_job(core, batch, request)
        except _Failure as exc:
            return RunResult.failure(exc.kind, str(exc), handle=request.handle)
        finally:
            self._slots.release()

    def _run_job(self, core: Any, batch: Any, request: RunRequest) -> RunResult:
        try:
            configmap = configmap_for(request, self.namespace)
            job = job_for(request, self.options)
        except ValueError as exc:
            raise _Failure(ErrorKind.BACKEND_ERROR, str(exc)) from exc
        name = job["metadata"]["name"]
        events: queue.Queue = queue.Queue()
        watchers: list[_Watcher] = []
        progress = _Progress(created_at=time.monotonic(), events=events)
        made_configmap = made_job = False
        try:
            self._create(core.create_namespaced_config_map, client.V1ConfigMap, configmap)
            made_configmap = True
            created = self._create(batch.create_namespaced_job, client.V1Job, job)
            made_job = True
            self._adopt_configmap(core, name, created)
            watchers = [
                _Watcher(
                    "job",
                    batch.list_namespaced_job,
                    self.namespace,
                    {"field_selector": f"metadata.name={name}"},
                    lambda obj: (obj.get("metadata") or {}).get("name") == name,
                    events,
                    self.options.watch_timeout_s,
                ),
                _Watcher(
                    "pod",
                    core.list_namespaced_pod,
                    self.namespace,
                    {"label_selector": f"{HANDLE_LABEL}={name}"},
                    lambda obj: (
                        ((obj.get("metadata") or {}).get("labels") or {}).get(HANDLE_LABEL) == name
                    ),
                    events,
                    self.options.watch_timeout_s,
                ),
            ]
            result = self._follow(core, batch, request, name, events, progress)
        except _Failure as exc:
            if exc.kind != ErrorKind.CANCELLED:
                raise
            # Stopped by someone else: keep what the program wrote until then.
            result = RunResult(handle=request.handle, error_kind=exc.kind, error_message=str(exc))
        except ApiException as exc:
            raise _Failure(*self._api_failure(exc, f"run sandbox {name}")) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Failure(
                ErrorKind.UNAVAILABLE,
                f"The Kubernetes API at {self.api_host} is unreachable: {exc}",
            ) from exc
        finally:
            for watcher in watchers:
                watcher.stop()
            for follower in progress.followers.values():
                follower.stop()
            if made_job:
                self._delete(batch.delete_namespaced_job, name)
            if made_configmap:
                self._delete(core.delete_namespaced_config_map, name)
        stdout, stderr = progress.followers.get(PROGRAM), progress.followers.get(STDERR)
        if stdout is not None:
            result.stdout, result.stdout_truncated = bytes(stdout.data), stdout.truncated
        if stderr is not None:
            result.stderr, result.stderr_truncated = bytes(stderr.data), stderr.truncated
        return result

    def _create(self, create: Any, model: Any, body: dict[str, Any]) -> Any:
        kind, name = body["kind"], body["metadata"]["name"]
        try:
            return create(self.namespace, model.from_dict(body))
        except ApiException as exc:
            if exc.status == 409:
                raise _Failure(
                    ErrorKind.BACKEND_ERROR,
                    f"A {kind} named {name!r} already exists in namespace {self.namespace!r}: "
                    "an earlier attempt at this run (or another worker) made it. It was left "
                    "alone; remove_orphans (manage.py reap_executions) clears it once it is old.",
                ) from exc
            raise _Failure(*self._api_failure(exc, f"create the {kind} {name}")) from exc

    def _adopt_configmap(self, core: Any, name: str, job: Any) -> None:
        """Make the Job own the ConfigMap, so the garbage collector deletes it with the Job."""
        uid = getattr(getattr(job, "metadata", None), "uid", None)
        if not uid:
            return
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": uid,
            "blockOwnerDeletion": False,
            "controller": False,
        }
        core.patch_namespaced_config_map(
            name, self.namespace, {"metadata": {"ownerReferences": [owner]}}
        )

    def _delete(self, delete: Any, name: str) -> None:
        """Delete, its dependents in the background; never raise (remove_orphans retries)."""
        try:
            delete(name, self.namespace, propagation_policy="Background", grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                logger.warning("could not delete %s: %s", name, _api_message(exc))
        except Exception as exc:
            logger.warning("could not delete %s: %s", name, exc)

    def _follow(
        self,
        core: Any,
        batch: Any,
        request: RunRequest,
        name: str,
        events: queue.Queue,
        progress: _Progress,
    ) -> RunResult:
        """Consume watch and log events until the run has an outcome."""
        wall_s = request.limits.wall_time_s
        pending_deadline = progress.created_at + self.options.pending_timeout_s
        result = RunResult(handle=request.handle)
        while True:
            now = time.monotonic()
            if progress.terminated is not None:
                logs_done = all(f.done for f in progress.followers.values())
                grace_over = now >= (progress.terminated_seen or now) + self.options.grace_s
                if logs_done or grace_over:
                    return self._finish(progress, result)
                deadline = (progress.terminated_seen or now) + self.options.grace_s
            elif progress.started_at is not None:
                deadline = progress.started_at + wall_s
                if now >= deadline:
                    result.timed_out = True
                    result.wall_time_ms = int((now - progress.started_at) * 1000)
                    return result
            else:
                deadline = pending_deadline
                if now >= deadline:
                    raise _Failure(ErrorKind.BACKEND_ERROR, self._pending_message(name, progress))
            try:
                kind, *payload = events.get(timeout=max(0.01, deadline - now))
            except queue.Empty:
                continue
            if kind == "error":
                self._raise_stream_error(payload[0], payload[1])
            elif kind == "log":
                container, error = payload
                follower = progress.followers[container]
                if follower.truncated:
                    # One byte over the cap: stop here; the Job is deleted on the way out.
                    result.wall_time_ms = int(
                        (time.monotonic() - (progress.started_at or now)) * 1000
                    )
                    return result
                if error is not None and progress.terminated is None:
                    logger.info("log of %s/%s ended: %s", name, container, error)
            elif kind == "job":
                self._on_job(name, payload[0], payload[1], progress, result, wall_s)
                if result.timed_out:
                    return result
            elif kind == "pod":
                self._on_pod(core, request, name, payload[0], payload[1], progress)
                if progress.pod_gone and progress.terminated is None:
                    self._on_pod_gone(batch, name, progress, result)
                    return result

    def _on_job(
        self,
        name: str,
        event_type: str,
        job: dict[str, Any],
        progress: _Progress,
        result: RunResult,
        wall_s: float,
    ) -> None:
        if event_type == "DELETED" or (job.get("metadata") or {}).get("deletionTimestamp"):
            raise _Failure(
                ErrorKind.CANCELLED, "The sandbox was stopped and removed before it finished."
            )
        for condition in _conditions(job):
            # FailureTarget comes first: the controller then deletes the pod, then says Failed.
            if condition.get("type") not in ("Failed", "FailureTarget"):
                continue
            if condition.get("status") != "True":
                continue
            if condition.get("reason") == "DeadlineExceeded":
                if progress.terminated is not None:
                    return  # the program ended first; its own status decides
                self._deadline_reached(name, progress, result)

    def _on_pod(
        self,
        core: Any,
        request: RunRequest,
        name: str,
        event_type: str,
        pod: dict[str, Any],
        progress: _Progress,
    ) -> None:
        meta = pod.get("metadata") or {}
        progress.pod_name = meta.get("name", progress.pod_name)
        status = pod.get("status") or {}
        inits = _statuses(pod, "initContainerStatuses")
        containers = _statuses(pod, "containerStatuses")
        program = containers.get(PROGRAM) or {}
        state = program.get("state") or {}
        if "terminated" in state and progress.terminated is None:
            progress.terminated = state["terminated"]
            progress.terminated_seen = time.monotonic()
        if ("running" in state or "terminated" in state) and progress.started_at is None:
            progress.started_at = time.monotonic()
        # Follow each container's log once it has one.
        for container, cap in (
            (PROGRAM, request.limits.output_bytes),
            (STDERR, request.limits.output_bytes),
        ):
            container_state = (containers.get(container) or {}).get("state") or {}
            if container not in progress.followers and (
                "running" in container_state or "terminated" in container_state
            ):
                progress.followers[container] = _LogFollower(
                    core, self.namespace, progress.pod_name, container, cap, progress.events
                )
        if progress.terminated is not None:
            return
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            progress.pod_gone = True
            return
        # Preparation failed: the image lacks what the stream wiring needs.
        prepare = ((inits.get(PREPARE) or {}).get("state") or {}).get("terminated") or {}
        if prepare and prepare.get("exitCode", 0) != 0:
            detail = f"{prepare.get('reason', '')} {prepare.get('message', '')}".strip()
            raise _Failure(
                ErrorKind.BACKEND_ERROR,
                f"The sandbox could not be prepared in image {request.image!r} (it needs "
                f"/bin/sh and mkfifo): exit code {prepare.get('exitCode')} {detail}".strip(),
            )
        for container, container_status in [*inits.items(), *containers.items()]:
            waiting = (container_status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in START_FAILURES:
                raise _Failure(
                    ErrorKind.BACKEND_ERROR,
                    f"The sandbox pod could not start container {container!r}: {reason}: "
                    f"{waiting.get('message', '')} (image {request.image!r})".replace(":  (", " ("),
                )
            if reason:
                progress.pending_reason = (
                    f"{container}: {reason} {waiting.get('message', '')}".strip()
                )
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                progress.pending_reason = (
                    f"{condition.get('reason', 'not scheduled')}: {condition.get('message', '')}"
                ).strip()
        if status.get("phase") == "Failed":
            raise _Failure(
                ErrorKind.BACKEND_ERROR,
                f"The sandbox pod failed before the program ran: {status.get('reason', '')} "
                f"{status.get('message', '')}".strip(),
            )

    def _on_pod_gone(self, batch: Any, name: str, progress: _Progress, result: RunResult) -> None:
        """The pod is going away before the program ended: the Job's deadline (the Job
        controller deletes the pod, possibly before it marks the Job failed) or a removal."""
        try:
            job = batch.read_namespaced_job(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            job = None
        conditions = (job.status.conditions or []) if job is not None and job.status else []
        deadline = any(
            c.type in ("Failed", "FailureTarget")
            and c.status == "True"
            and c.reason == "DeadlineExceeded"
            for c in conditions
        )
        if job is None or job.metadata is None or job.metadata.deletion_timestamp or not deadline:
            raise _Failure(
                ErrorKind.CANCELLED, "The sandbox pod was removed before the program finished."
            )
        self._deadline_reached(name, progress, result)

    def _deadline_reached(self, name: str, progress: _Progress, result: RunResult) -> None:
        """The Job's deadline ended the run: a time-out if the program had started, else the
        pod never got going, which is the infrastructure's failure, not the program's."""
        if progress.started_at is None:
            raise _Failure(
                ErrorKind.BACKEND_ERROR,
                f"The sandbox Job {name} reached its deadline before the program started. "
                f"{self._pending_message(name, progress)}",
            )
        result.timed_out = True
        result.wall_time_ms = int((time.monotonic() - progress.started_at) * 1000)

    def _finish(self, progress: _Progress, result: RunResult) -> RunResult:
        terminated = progress.terminated or {}
        code = int(terminated.get("exitCode", -1))
        result.record_exit(code)
        result.oom_killed = terminated.get("reason") == "OOMKilled"
        started = _parse_time(terminated.get("startedAt"))
        finished = _parse_time(terminated.get("finishedAt"))
        if started is not None and finished is not None and finished >= started:
            result.wall_time_ms = int((finished - started).total_seconds() * 1000)
        else:
            began = progress.started_at or progress.terminated_seen or time.monotonic()
            result.wall_time_ms = int(((progress.terminated_seen or began) - began) * 1000)
        return result

    def _pending_message(self, name: str, progress: _Progress) -> str:
        timeout = self.options.pending_timeout_s
        if progress.pending_reason:
            return (
                f"The sandbox pod of Job {name} did not start within {timeout} s: "
                f"{progress.pending_reason}"
            )
        if not progress.pod_name:
            return (
                f"The Job {name} created no pod within {timeout} s. Its events say why (a "
                f"PodSecurity or ResourceQuota refusal, for example): kubectl -n "
                f"{self.namespace} describe job {name}"
            )
        return f"The sandbox pod {progress.pod_name} did not start within {timeout} s."

    def _raise_stream_error(self, kind: str, exc: BaseException) -> None:
        if isinstance(exc, ApiException):
            raise _Failure(*self._api_failure(exc, f"watch {kind}s"))
        raise _Failure(
            ErrorKind.UNAVAILABLE,
            f"Lost the Kubernetes API at {self.api_host} during the run: "
            f"{type(exc).__name__}: {exc}",
        )

    def _api_failure(self, exc: ApiException, action: str) -> tuple[ErrorKind, str]:
        message = _api_message(exc)
        status = exc.status or 0
        if status == 401:
            return (
                ErrorKind.BACKEND_ERROR,
                f"The Kubernetes API at {self.api_host} rejected the platform's credentials "
                f"(401) when trying to {action}: {message}",
            )
        if status == 403 and "exceeded quota" in message:
            return (
                ErrorKind.BACKEND_ERROR,
                f"The ResourceQuota of namespace {self.namespace!r} refused to {action}: {message}",
            )
        if status == 403:
            return (
                ErrorKind.BACKEND_ERROR,
                f"The platform's ServiceAccount may not {action} in namespace "
                f"{self.namespace!r} (RBAC, 403): {message}. Its Role must allow jobs, pods, "
                "pods/log and configmaps there (deploy/kubernetes).",
            )
        if status >= 500 or status == 0:
            return (
                ErrorKind.UNAVAILABLE,
                f"The Kubernetes API at {self.api_host} failed ({status}) when trying to "
                f"{action}: {message}",
            )
        if status == 404:
            return (
                ErrorKind.BACKEND_ERROR,
                f"Not found (404) when trying to {action}: {message}. Does namespace "
                f"{self.namespace!r} exist?",
            )
        return (
            ErrorKind.BACKEND_ERROR,
            f"The Kubernetes API refused to {action} ({status}): {message}",
        )

    def cancel(self, handle: str) -> None:
        """Delete the Job (its Pod in the background) and the ConfigMap of ``handle``.

        Unknown handles are ignored, as are objects this backend did not make. Raises
        ``KubernetesUnavailable`` when the API cannot be reached, so the caller knows the
        cancel did not happen.
        """
        core, batch = self._apis()
        name = resource_name(handle)
        try:
            job = batch.read_namespaced_job(name, self.namespace)
            labels = job.metadata.labels or {}
            if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                logger.warning("refusing to cancel unmanaged job %r", name)
                return
            batch.delete_namespaced_job(
                name, self.namespace, propagation_policy="Background", grace_period_seconds=0
            )
        except ApiException as exc:
            if exc.status != 404:
                if exc.status >= 500:
                    raise KubernetesUnavailable(_api_message(exc)) from exc
                raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesUnavailable(
                f"The Kubernetes API at {self.api_host} is unreachable: {exc}"
            ) from exc
        self._delete(core.delete_namespaced_config_map, name)

    def health(self) -> Health:
        """Reach the API, report its version, and list our Jobs (which checks RBAC too)."""
        capacity = self.options.max_concurrent_per_worker
        try:
            api = self.api_client()
            version = client.VersionApi(api).get_code()
            jobs = client.BatchV1Api(api).list_namespaced_job(
                self.namespace, label_selector=MANAGED_SELECTOR
            )
        except ImproperlyConfigured as exc:
            return Health(ok=False, detail=str(exc), capacity=capacity)
        except ApiException as exc:
            _kind, message = self._api_failure(exc, "list jobs")
            return Health(ok=False, detail=message, capacity=capacity)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return Health(
                ok=False,
                detail=f"The Kubernetes API at {self.api_host} is unreachable: {exc}",
                capacity=capacity,
            )
        except Exception as exc:  # an answer the client could not read is not healthy
            return Health(
                ok=False,
                detail=f"The Kubernetes API at {self.api_host} gave an unreadable answer: "
                f"{type(exc).__name__}: {exc}",
                capacity=capacity,
            )
        active = [
            job
            for job in jobs.items
            if job.metadata and _is_managed(job.metadata.labels) and not _job_finished(job)
        ]
        git_version = str(getattr(version, "git_version", "") or "")
        return Health(
            ok=True,
            detail=(
                f"Kubernetes {git_version} at {self.api_host}; namespace {self.namespace!r}; "
                f"{len(active)} sandbox Jobs active (this worker runs up to "
                f"{capacity} at a time)."
            ),
            version=git_version,
            capacity=capacity,
            in_use=len(active),
            extra={
                "host": self.api_host,
                "namespace": self.namespace,
                "runtime_class": self.options.runtime_class or "default",
                "service_account": self.options.service_account,
            },
        )

    def remove_orphans(self, older_than_s: float = 900.0) -> int:
        """Delete our Jobs (with their Pods) and ConfigMaps created over ``older_than_s`` ago.

        ``older_than_s`` must exceed the longest run (pending timeout plus wall-time cap plus
        grace) or live runs are cut short. Returns how many sandboxes (distinct names) were
        removed; raises ``KubernetesUnavailable`` when the API cannot be reached.
        """
        core, batch = self._apis()
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_s)
        removed: set[str] = set()
        try:
            for lister, deleter in (
                (batch.list_namespaced_job, batch.delete_namespaced_job),
                (core.list_namespaced_config_map, core.delete_namespaced_config_map),
            ):
                for item in lister(self.namespace, label_selector=MANAGED_SELECTOR).items:
                    meta = item.metadata
                    created = meta.creation_timestamp
                    if not _is_managed(meta.labels) or created is None or created >= cutoff:
                        continue
                    try:
                        deleter(meta.name, self.namespace, propagation_policy="Background")
                        removed.add(meta.name)
                    except ApiException as exc:
                        if exc.status != 404:
                            logger.warning("could not remove orphan %s: %s", meta.name, exc)
        except ApiException as exc:
            raise KubernetesUnavailable(self._api_failure(exc, "list sandboxes")[1]) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesUnavailable(
                f"The Kubernetes API at {self.api_host} is unreachable: {exc}"
            ) from exc
        return len(removed)

    def describe(self) -> Isolation:
        options = self.options
        return Isolation(
            facts={
                "namespace": options.namespace,
                "service account": options.service_account,
                "runtime class": options.runtime_class or "the cluster's default",
                "node selector": ", ".join(f"{k}={v}" for k, v in options.node_selector.items())
                or "any node",
                "sandboxes at once per worker": str(options.max_concurrent_per_worker),
            }
        )


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason or exc)[:500]
    except (ValueError, TypeError, AttributeError):
        return str(exc.reason or exc)[:500]


def _is_managed(labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(COMPONENT_LABEL) == COMPONENT


def _job_finished(job: Any) -> bool:
    conditions = getattr(job.status, "conditions", None) or []
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)


__all__: Sequence[str] = ("KubernetesBackend", "configmap_for", "job_for", "resource_name")
