"""``KubernetesBackend``: cluster access, running a Job, cancel, health and orphan removal."""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import urllib3
from django.core.exceptions import ImproperlyConfigured
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION

from executions.backends.kubernetes.following import (
    FollowingMixin,
    _Failure,
    _Progress,
    _Watcher,
)
from executions.backends.kubernetes.manifests import (
    COMPONENT,
    COMPONENT_LABEL,
    HANDLE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    PROGRAM,
    STDERR,
    KubernetesOptions,
    configmap_for,
    job_for,
    resource_name,
)
from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
)

logger = logging.getLogger(__name__)


class KubernetesUnavailable(Exception):
    """The API server could not be reached or answered with a server error."""


class KubernetesBackend(FollowingMixin, ExecutionBackend):
    """Runs each request as a hardened Kubernetes Job in the sandbox namespace.

    Options: ``KubernetesOptions``; tests may also inject ``api_client`` (a
    ``kubernetes.client.ApiClient``). See the package docstring for the semantics of a run.
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
