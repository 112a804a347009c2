"""Run sandboxes as Kubernetes ``batch/v1`` Jobs; the only package that talks to a cluster.

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
``app.kubernetes.io/component: sandbox``; this package does not widen it, even for a runtime
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

from executions.backends.kubernetes.backend import KubernetesBackend, KubernetesUnavailable
from executions.backends.kubernetes.manifests import (
    COMPONENT_LABEL,
    CONFIGMAP_BUDGET,
    EXECUTION_LABEL,
    HANDLE_LABEL,
    MANAGED_BY_LABEL,
    KubernetesOptions,
    configmap_for,
    job_for,
    labels_for,
    resource_name,
)

__all__ = [
    "COMPONENT_LABEL",
    "CONFIGMAP_BUDGET",
    "EXECUTION_LABEL",
    "HANDLE_LABEL",
    "MANAGED_BY_LABEL",
    "KubernetesBackend",
    "KubernetesOptions",
    "KubernetesUnavailable",
    "configmap_for",
    "job_for",
    "labels_for",
    "resource_name",
]
