"""The Kubernetes objects of a run, rendered from its request and the backend's options."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox.contract import RunRequest
from sandbox.files import safe_relative
from sandbox.options import OptionError

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

_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


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
