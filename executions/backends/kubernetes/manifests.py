"""The Kubernetes objects of a session, rendered from it and the backend's options."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox import supervisor
from sandbox.contract import Session
from sandbox.files import safe_relative
from sandbox.options import OptionError
from sandbox.policy import Limits

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "evalplatform"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "sandbox"
EXECUTION_LABEL = "evalplatform.io/execution"
# The session's cancel handle, on every object of every Job of the session.
HANDLE_LABEL = "evalplatform.io/handle"
# The Job an object belongs to (its name), so that a run watches only its own pod.
JOB_LABEL = "evalplatform.io/job"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={COMPONENT}"

DEFAULT_NAMESPACE = "evalplatform-sandbox"
DEFAULT_SERVICE_ACCOUNT = "evalplatform-sandbox"

# The containers: the compile step (an init container) and the cases.
COMPILE = "compile"
SESSION = "session"
INPUT_DIR = "/sandbox/input"
SUPERVISOR_KEY = "supervisor"
STREAM_KEY = "stream"
COMPILE_STREAM_KEY = "compile-stream"
# Both containers run the supervisor, as PID 1 with no shell, on the stream mounted for them.
COMMAND = [f"{supervisor.BIN_DIR}/supervisor", f"{INPUT_DIR}/{STREAM_KEY}"]
MIB = 1024 * 1024
# A ConfigMap may not exceed 1 MiB, base64 included; keep room for keys and metadata.
CONFIGMAP_BUDGET = MIB - 16 * 1024
# The supervisor's longest record header (its MAX_LINE).
RECORD_HEADER_BYTES = 512

_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


# --- what a Job runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of the supervisor's stream: ``"K"`` (the compile step) or ``"C"`` (a case)."""

    kind: str
    index: int
    command: tuple[str, ...]
    limits: Limits
    stdin: bytes

    def encode(self) -> bytes:
        return supervisor.step(self.kind, self.index, self.command, self.limits, self.stdin)

    @property
    def log_bytes(self) -> int:
        """The most this step's record can take in the supervisor's log, with the newline
        that ends it."""
        return RECORD_HEADER_BYTES + 2 * self.limits.output_bytes + 1


def compile_step(session: Session) -> Step | None:
    if session.compile is None:
        return None
    return Step("K", 0, tuple(session.compile.command), session.compile.limits, b"")


def case_step(session: Session, index: int) -> Step:
    return Step("C", index, tuple(session.command), session.limits, session.stdins[index])


@dataclass(frozen=True)
class Part:
    """What one Job runs: the session's compile step, when it has one, then its cases
    ``first`` to ``end - 1``. A session is one part, unless its cases' input does not fit in
    one ConfigMap or a case's running out of memory took the whole container with it; each
    later part compiles again. Each stream has a nonce of its own."""

    session: Session
    first: int
    end: int
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    compile_nonce: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def name(self) -> str:
        handle = self.session.handle
        return resource_name(handle if self.first == 0 else f"{handle}-{self.first}")

    @property
    def compile(self) -> Step | None:
        return compile_step(self.session)

    @property
    def cases(self) -> list[Step]:
        return [case_step(self.session, index) for index in range(self.first, self.end)]

    def stream(self) -> bytes:
        """The cases' container's input: the code is mounted, so its archive is empty."""
        steps = b"".join(step.encode() for step in self.cases)
        return supervisor.session_start(self.nonce, b"") + steps + supervisor.END

    def compile_stream(self) -> bytes | None:
        step = self.compile
        if step is None:
            return None
        return supervisor.session_start(self.compile_nonce, b"") + step.encode() + supervisor.END


def _base64_size(n_bytes: int) -> int:
    return 4 * math.ceil(n_bytes / 3)


def part_for(session: Session, first: int, *, supervisor_size: int) -> Part:
    """The part of ``session`` from case ``first`` on: as many cases as fit in one ConfigMap
    beside the supervisor, the code and the compile step. Raises ``ValueError`` when not even
    case ``first`` fits."""
    fixed = _base64_size(supervisor_size) + sum(
        _base64_size(len(data)) for data in session.files.values()
    )
    probe = Part(session, first, first)
    compile_stream = probe.compile_stream()
    if compile_stream is not None:
        fixed += _base64_size(len(compile_stream))
    stream = len(probe.stream())
    end = first
    while end < len(session.stdins):
        grown = stream + len(case_step(session, end).encode())
        if fixed + _base64_size(grown) > CONFIGMAP_BUDGET:
            break
        stream, end = grown, end + 1
    if end == first:
        size = fixed + _base64_size(stream + len(case_step(session, first).encode()))
        raise ValueError(
            f"the supervisor, the code and the input of case {first} take {size} bytes in "
            "base64; the Kubernetes backend delivers them in a ConfigMap, which holds at most "
            f"{CONFIGMAP_BUDGET} bytes"
        )
    return Part(session, first, end, probe.nonce, probe.compile_nonce)


# --- rendering: the only place the objects' fields are chosen ---------------------------------


def resource_name(handle: str) -> str:
    """The Job's (and ConfigMap's) name for ``handle``: a DNS-1123 label of at most 63
    characters. Handles that are not one already get a hash suffix, so names stay unique."""
    name = re.sub(r"[^a-z0-9-]+", "-", handle.lower()).strip("-")
    if name == handle and 0 < len(name) <= 63:
        return name
    digest = hashlib.sha256(handle.encode()).hexdigest()[:10]
    return f"{name[:52].strip('-') or 'sandbox'}-{digest}"


def labels_for(part: Part) -> dict[str, str]:
    """Labels on the Job, its Pod template and its ConfigMap. The session's own labels are
    kept when they are valid Kubernetes labels; ours always win."""
    session = part.session
    extra = {
        key: value
        for key, value in session.labels.items()
        if _LABEL_KEY.fullmatch(key) and len(key) <= 253 and _LABEL_VALUE.fullmatch(value)
    }
    return {
        **extra,
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: COMPONENT,
        EXECUTION_LABEL: str(session.execution_id),
        HANDLE_LABEL: resource_name(session.handle),
        JOB_LABEL: part.name,
    }


def configmap_for(part: Part, namespace: str, *, supervisor_binary: bytes) -> dict[str, Any]:
    """The ConfigMap of ``part``: the supervisor (key ``supervisor``), the code files (keys
    ``f0``, ``f1``, ... in file-name order) and the streams (``stream``, and
    ``compile-stream`` when the session compiles), base64 in ``binaryData``. Raises
    ``ValueError`` for an unsafe file name or when the content does not fit in a ConfigMap."""
    files = part.session.files
    for name in files:
        safe_relative(name)
    data = {SUPERVISOR_KEY: supervisor_binary}
    data.update({f"f{index}": files[name] for index, name in enumerate(sorted(files))})
    data[STREAM_KEY] = part.stream()
    compile_stream = part.compile_stream()
    if compile_stream is not None:
        data[COMPILE_STREAM_KEY] = compile_stream
    encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
    # The API server's limit is on the stored object, where binaryData is base64 (4/3).
    size = sum(len(value) for value in encoded.values())
    if size > CONFIGMAP_BUDGET:
        raise ValueError(
            f"the supervisor, the code and the input take {size} bytes in base64; the "
            "Kubernetes backend delivers them in a ConfigMap, which holds at most "
            f"{CONFIGMAP_BUDGET} bytes"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": part.name, "namespace": namespace, "labels": labels_for(part)},
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


def _resources(steps: Sequence[Step], extra_memory: int = 0) -> dict[str, str]:
    """A container's resources for running ``steps``, one after another."""
    largest = max(steps, key=lambda step: step.limits.memory_bytes).limits
    output = max(step.limits.output_bytes for step in steps)
    # The supervisor's own needs sit on top of the largest step's: it holds one step's capped
    # stdout and stderr at a time.
    memory = largest.memory_bytes + supervisor.SUPERVISOR_MEMORY_BYTES + 2 * output + extra_memory
    return {
        "cpu": f"{max(1, round(max(step.limits.cpus for step in steps) * 1000))}m",
        "memory": _quantity_mib(memory),
        # The container's log, which counts against ephemeral storage, holds only the
        # supervisor's records, each capped; the root is read-only and scratch is in memory.
        "ephemeral-storage": _quantity_mib(sum(step.log_bytes for step in steps) + 8 * MIB),
    }


def _config_volume(name: str, configmap: str, mode: int, items: list[dict[str, str]]) -> Any:
    return {
        "name": name,
        "configMap": {"name": configmap, "defaultMode": mode, "items": items},
    }


def _memory_volume(name: str, size_mb: int) -> dict[str, Any]:
    return {"name": name, "emptyDir": {"medium": "Memory", "sizeLimit": f"{size_mb}Mi"}}


def job_for(part: Part, options: KubernetesOptions) -> dict[str, Any]:
    """Return the ``batch/v1`` Job for ``part``, in the API's names.

    Everything comes from the session's policy, the catalogue's image and commands, and the
    operator's ``options``; the policy's ``runtime_class`` overrides the option's. Both
    containers run the supervisor as PID 1 on their own stream; the code, the supervisor and
    the streams are read-only mounts of the part's ConfigMap. When the session compiles, the
    init container ``compile`` copies the code into the ``build`` emptyDir and compiles there,
    and the cases' container mounts ``build`` read-only as its code directory.
    """
    session = part.session
    policy = session.policy
    uid, gid = policy.user
    name = part.name
    labels = labels_for(part)
    files = sorted(session.files)
    env = [{"name": key, "value": value} for key, value in policy.environment.items()]

    def container(container_name: str, resources: dict[str, str], mounts: list[Any]) -> Any:
        return {
            "name": container_name,
            "image": session.image,
            "command": list(COMMAND),
            "workingDir": "/",
            "env": env,
            "resources": {"requests": resources, "limits": resources},
            "securityContext": _container_security(uid, gid),
            "volumeMounts": [
                {"name": "supervisor", "mountPath": supervisor.BIN_DIR, "readOnly": True},
                *mounts,
                {"name": "scratch", "mountPath": policy.scratch_dir},
            ],
        }

    compile_step = part.compile
    code_volume = "code" if compile_step is None else "build"
    # Build pages, written by the compile step, stay charged to the pod while the cases run.
    build_memory = 0 if compile_step is None else compile_step.limits.scratch_mb * MIB
    cases = container(
        SESSION,
        _resources(part.cases, extra_memory=build_memory),
        [
            {"name": "stream", "mountPath": INPUT_DIR, "readOnly": True},
            {"name": code_volume, "mountPath": supervisor.CODE_DIR, "readOnly": True},
        ],
    )
    volumes = [
        _config_volume("supervisor", name, 0o555, [{"key": SUPERVISOR_KEY, "path": "supervisor"}]),
        _config_volume(
            "code",
            name,
            0o444,
            [
                {"key": f"f{index}", "path": str(safe_relative(file_name))}
                for index, file_name in enumerate(files)
            ],
        ),
        _config_volume("stream", name, 0o444, [{"key": STREAM_KEY, "path": STREAM_KEY}]),
        _memory_volume("scratch", policy.limits.scratch_mb),
    ]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": options.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "restartPolicy": "Never",
        # A deleted sandbox has nothing to save.
        "terminationGracePeriodSeconds": 0,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "fsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [cases],
        "volumes": volumes,
    }
    if compile_step is not None:
        pod_spec["initContainers"] = [
            container(
                COMPILE,
                _resources([compile_step]),
                [
                    {"name": "compile-stream", "mountPath": INPUT_DIR, "readOnly": True},
                    {"name": "code", "mountPath": supervisor.CODE_DIR, "readOnly": True},
                    {"name": "build", "mountPath": supervisor.BUILD_DIR},
                ],
            )
        ]
        volumes += [
            _config_volume(
                "compile-stream", name, 0o444, [{"key": COMPILE_STREAM_KEY, "path": STREAM_KEY}]
            ),
            _memory_volume("build", compile_step.limits.scratch_mb),
        ]
    runtime_class = policy.runtime_class or options.runtime_class
    if runtime_class:
        pod_spec["runtimeClassName"] = runtime_class
    if options.node_selector:
        pod_spec["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        pod_spec["tolerations"] = [dict(toleration) for toleration in options.tolerations]
    if options.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in options.image_pull_secrets]
    steps = [*([compile_step] if compile_step else []), *part.cases]
    # Every step's wall time and grace, after the time the pod may take to start: the Job
    # stops itself if this worker dies, never before the worker's own step deadlines.
    running_s = sum(step.limits.wall_time_s + options.grace_s for step in steps)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": options.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": math.ceil(running_s) + options.pending_timeout_s,
            "ttlSecondsAfterFinished": options.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
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
    # Seconds a step may take beyond its wall time (the supervisor's kill, reaping and
    # emptying scratch, and the log's way to the platform) before the worker stops waiting
    # for its record and deletes the Job.
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
