"""Run sessions as Kubernetes ``batch/v1`` Jobs; the only package that talks to a cluster.

Every object is rendered from the session's ``SandboxPolicy`` by ``configmap_for`` and
``job_for`` (nothing else sets a field). A session (``sandbox.contract.Session``: the code,
an optional compile step, the stdin of each case) goes:

1. take one of ``max_concurrent_per_worker`` slots of this worker process;
2. create a ConfigMap holding the session supervisor (``sandbox.supervisor``, a static
   executable of about 80 KB), the code files and the supervisor's input streams
   (``binaryData``, so any bytes survive), then the Job, then make the Job the ConfigMap's
   owner so the garbage collector removes both together;
3. follow the Job and its Pod with watches (label and field selectors, server-side
   ``timeout_seconds``, resumed on expiry) and each container's log, where the supervisor
   writes one record per step; tell the session's observer as each step ends
   (``following.JobFollower``);
4. delete the Job (``propagationPolicy: Background``, so its Pod goes too) and the
   ConfigMap, on every path.

The pod meets the Pod Security Standard *restricted*: uid/gid 65534, ``runAsNonRoot``,
``RuntimeDefault`` seccomp, all capabilities dropped, no privilege escalation, read-only
root, no service-account token, no service links, no host namespaces or paths, only
``configMap`` and ``emptyDir`` volumes, requests equal to limits. The network is denied by
the sandbox namespace's deny-all NetworkPolicy (``deploy/kubernetes``), which selects pods by
``app.kubernetes.io/component: sandbox``; this package does not widen it, even for a runtime
with ``network`` on (widening egress is the operator's decision, in that policy).

Semantics callers rely on:

* **One Job per session.** Its container ``session`` runs the supervisor directly (no shell)
  as PID 1, as uid 65534 with no capability: the supervisor's unprivileged mode. It reads
  its stream from ``/sandbox/input/stream`` (a read-only mount: an empty archive, since the
  code is mounted, then one step per case) and runs each case as a fresh process in the
  read-only code directory ``/sandbox/code``, with its own stdin and limits; between cases
  it kills every other process and empties ``/tmp`` (a memory-backed ``emptyDir``),
  ``/dev/shm``, ``/dev/mqueue``, SysV IPC and the termination log. Runtime images need only
  the catalogue's command: no shell, no ``tar``.
* **Compile step.** When the session has one, an init container ``compile`` runs the
  supervisor on a stream holding only that step: it copies the code into the ``build``
  ``emptyDir`` and compiles there, and the ``session`` container mounts ``build``
  read-only as ``/sandbox/code``. The compile result is that container's record. A compile
  step that did not succeed ends the supervisor with status 1, so the init container fails
  and the cases never start; the backend reports the result and stops.
* **Results.** Each record carries its stream's nonce and the step's index and ends with a
  newline (containerd writes a log line only once it ends), and is parsed by
  ``supervisor.RecordReader`` with each step's output cap; stdout and stderr come back
  separately and capped, with the supervisor's exit status, signal, wall and CPU time, peak
  memory, time-out and out-of-memory flags. Anything else in a log (a garbled record, a
  wrong nonce, a record of another step, a log that ends inside a record) fails the current
  step as ``BACKEND_ERROR``: such a log's results are not trusted.
* **Time.** A step must report within its wall time plus ``grace_s`` of the one before
  (the first, of its container being seen running; until then the pod has
  ``pending_timeout_s`` to be scheduled and started); past that the Job is deleted and the
  step fails. The Job's own ``activeDeadlineSeconds`` (every step's wall time and grace,
  plus ``pending_timeout_s``) stops it even if this worker dies.
* **Out of memory.** On cgroup v2 the kubelet has the kernel kill a whole container when
  its memory runs out, the supervisor with the program. A container that ends
  ``OOMKilled`` without reporting its step gives that step's result (``oom_killed``, exit
  code 137, signal 9); the cases after it go on in a new Job (which compiles again).
* **Size.** The supervisor, the code and the streams must fit in one ConfigMap (about
  1 MiB in base64). A session whose cases' input does not fit in one runs as several Jobs,
  one after another, each with as many cases as fit; a case whose input alone does not fit
  fails with ``BACKEND_ERROR``.
* **Pending.** A pod that cannot be scheduled (``PodScheduled`` False, e.g. Unschedulable)
  or has not started after ``pending_timeout_s`` fails with ``BACKEND_ERROR`` naming the last
  reason; image and container-config errors (``ErrImagePull``, ``ImagePullBackOff``,
  ``InvalidImageName``, ``CreateContainerConfigError``, ...) fail at once.
* **Cancel.** ``cancel(handle)`` deletes every Job (and its Pod) and ConfigMap labelled with
  the session's handle, from any process. A run that sees its Job deleted by someone else
  reports ``CANCELLED`` for the step it was on; so does a run whose Pod vanished first.
* **Conflicts.** If a Job or ConfigMap with the run's name already exists (an earlier
  attempt whose worker died, or two workers given the same handle), the run fails with
  ``BACKEND_ERROR`` and leaves the existing objects alone: they are not this run's to adopt
  or delete (``remove_orphans`` clears them once they are old).
* **Failures** of the infrastructure come back as the result of the step they happened in,
  once (``RunResult.failure``): ``UNAVAILABLE`` when the API server cannot be reached or
  answers 5xx, ``BACKEND_ERROR`` for refusals (401/403 name the ServiceAccount's RBAC or the
  namespace's ResourceQuota), invalid objects, conflicts and pods that cannot start.
  ``run_session`` never raises for them.

Only ``jobs`` (batch), ``pods``, ``pods/log`` and ``configmaps`` in the sandbox namespace are
used, which is all the platform's Role grants. The cluster configuration is loaded lazily, by
the Kubernetes client from its own environment: in the cluster with the pod's ServiceAccount
(``KUBERNETES_SERVICE_HOST``) when that works, else from the ``kubeconfig`` option or the
client's default (``KUBECONFIG``, else ``~/.kube/config``); tests may inject ``api_client`` or
``host``.
"""

from __future__ import annotations

from executions.backends.kubernetes.backend import KubernetesBackend, KubernetesUnavailable
from executions.backends.kubernetes.manifests import (
    COMPONENT_LABEL,
    CONFIGMAP_BUDGET,
    EXECUTION_LABEL,
    HANDLE_LABEL,
    JOB_LABEL,
    MANAGED_BY_LABEL,
    KubernetesOptions,
    Part,
    configmap_for,
    job_for,
    labels_for,
    part_for,
    resource_name,
)

__all__ = [
    "COMPONENT_LABEL",
    "CONFIGMAP_BUDGET",
    "EXECUTION_LABEL",
    "HANDLE_LABEL",
    "JOB_LABEL",
    "MANAGED_BY_LABEL",
    "KubernetesBackend",
    "KubernetesOptions",
    "KubernetesUnavailable",
    "Part",
    "configmap_for",
    "job_for",
    "labels_for",
    "part_for",
    "resource_name",
]
