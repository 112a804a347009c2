"""``KubernetesBackend``: cluster access, running a session's Jobs, cancel, health and orphan
removal."""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

import urllib3
from django.core.exceptions import ImproperlyConfigured
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION

from executions.backends.kubernetes.following import REMOVED, JobFollower, _Failure, _Watcher
from executions.backends.kubernetes.manifests import (
    COMPONENT,
    COMPONENT_LABEL,
    HANDLE_LABEL,
    JOB_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    KubernetesOptions,
    Part,
    configmap_for,
    job_for,
    part_for,
    resource_name,
)
from executions.backends.kubernetes.session import SessionSteps
from sandbox import supervisor
from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
    Session,
    SessionObserver,
)

logger = logging.getLogger(__name__)


class KubernetesUnavailable(Exception):
    """The API server could not be reached or answered with a server error."""


class KubernetesBackend(ExecutionBackend):
    """Runs each session as a hardened Kubernetes Job in the sandbox namespace.

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

    @property
    def namespace(self) -> str:
        return self.options.namespace

    # -- the contract

    def _run(self, request: RunRequest) -> RunResult:
        return self.run_one_case(request)

    def run_session(self, session: Session, observer: SessionObserver) -> None:
        """Run ``session`` in one Job (more only when its input does not fit in one ConfigMap,
        or a case's running out of memory killed the container), after taking a slot; report
        a failure of the cluster as the result of the step it happened in."""
        if not observer.case_starting(0, session.handle):
            return
        steps = SessionSteps(session, observer)
        problem = supervisor.session_problem(session)
        if problem:
            steps.fail(ErrorKind.BACKEND_ERROR, problem)
            return
        try:
            binary = supervisor.binary()
            core, batch = self._apis()
        except (supervisor.SupervisorUnavailable, ImproperlyConfigured) as exc:
            steps.fail(ErrorKind.BACKEND_ERROR, str(exc))
            return
        if not self._slots.acquire(timeout=self.options.slot_wait_s):
            steps.fail(
                ErrorKind.UNAVAILABLE,
                f"All {self.options.max_concurrent_per_worker} Kubernetes sandbox slots of this "
                f"worker stayed busy for {self.options.slot_wait_s:g} s; retry later or raise "
                "max_concurrent_per_worker.",
            )
            return
        try:
            while not steps.over:
                try:
                    part = part_for(session, steps.next_case, supervisor_size=len(binary))
                except ValueError as exc:
                    raise _Failure(ErrorKind.BACKEND_ERROR, str(exc)) from exc
                self._run_part(core, batch, part, binary, steps)
        except _Failure as exc:
            steps.fail(exc.kind, str(exc))
        except Exception as exc:  # run_session must not raise for infrastructure failures
            logger.exception("kubernetes backend failed on execution %s", session.execution_id)
            steps.fail(
                ErrorKind.BACKEND_ERROR, f"Kubernetes backend error: {type(exc).__name__}: {exc}"
            )
        finally:
            self._slots.release()

    def _run_part(
        self, core: Any, batch: Any, part: Part, binary: bytes, steps: SessionSteps
    ) -> None:
        """Run ``part`` as one Job and delete it, with its ConfigMap, on every path; raise
        ``_Failure`` when the cluster fails the current step."""
        try:
            configmap = configmap_for(part, self.namespace, supervisor_binary=binary)
            job = job_for(part, self.options)
        except ValueError as exc:
            raise _Failure(ErrorKind.BACKEND_ERROR, str(exc)) from exc
        name = part.name
        events: queue.Queue = queue.Queue()
        watchers: list[_Watcher] = []
        follower: JobFollower | None = None
        made_configmap = made_job = False
        try:
            self._create(core.create_namespaced_config_map, client.V1ConfigMap, configmap)
            made_configmap = True
            created = self._create(batch.create_namespaced_job, client.V1Job, job)
            made_job = True
            self._adopt_configmap(core, name, created)
            follower = JobFollower(
                core=core,
                part=part,
                steps=steps,
                options=self.options,
                events=events,
                stream_error=self._stream_failure,
                read_job=lambda: batch.read_namespaced_job(name, self.namespace),
            )
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
                    {"label_selector": f"{JOB_LABEL}={name}"},
                    lambda obj: (
                        ((obj.get("metadata") or {}).get("labels") or {}).get(JOB_LABEL) == name
                    ),
                    events,
                    self.options.watch_timeout_s,
                ),
            ]
            follower.follow()
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
            if follower is not None:
                follower.stop()
            if made_job:
                self._delete(batch.delete_namespaced_job, name)
            if made_configmap:
                self._delete(core.delete_namespaced_config_map, name)

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
        """Make the Job own the ConfigMap, so the garbage collector deletes it with the Job.
        A ConfigMap gone by now was deleted by a cancel that came before the Job existed."""
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
        try:
            core.patch_namespaced_config_map(
                name, self.namespace, {"metadata": {"ownerReferences": [owner]}}
            )
        except ApiException as exc:
            if exc.status == 404:
                raise _Failure(ErrorKind.CANCELLED, REMOVED) from exc
            raise

    def _delete(self, delete: Any, name: str) -> None:
        """Delete, its dependents in the background; never raise (remove_orphans retries)."""
        try:
            delete(name, self.namespace, propagation_policy="Background", grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                logger.warning("could not delete %s: %s", name, _api_message(exc))
        except Exception as exc:
            logger.warning("could not delete %s: %s", name, exc)

    def _stream_failure(self, kind: str, exc: BaseException) -> _Failure:
        """The failure of the current step when a watch of ``kind`` objects broke with ``exc``."""
        if isinstance(exc, ApiException):
            return _Failure(*self._api_failure(exc, f"watch {kind}s"))
        return _Failure(
            ErrorKind.BACKEND_ERROR,  # the Job had been created
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
        """Delete every Job (their Pods in the background) and ConfigMap of the session
        ``handle``.

        Unknown handles are ignored, as are objects this backend did not make. Raises
        ``KubernetesUnavailable`` when the API cannot be reached, so the caller knows the
        cancel did not happen.
        """
        core, batch = self._apis()
        name = resource_name(handle)
        selector = f"{HANDLE_LABEL}={name}"
        try:
            for lister, deleter in (
                (batch.list_namespaced_job, batch.delete_namespaced_job),
                (core.list_namespaced_config_map, core.delete_namespaced_config_map),
            ):
                for item in lister(self.namespace, label_selector=selector).items:
                    labels = item.metadata.labels or {}
                    if not _is_managed(labels) or labels.get(HANDLE_LABEL) != name:
                        logger.warning("refusing to cancel unmanaged %s", item.metadata.name)
                        continue
                    try:
                        deleter(
                            item.metadata.name,
                            self.namespace,
                            propagation_policy="Background",
                            grace_period_seconds=0,
                        )
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
        except ApiException as exc:
            if exc.status >= 500:
                raise KubernetesUnavailable(_api_message(exc)) from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesUnavailable(
                f"The Kubernetes API at {self.api_host} is unreachable: {exc}"
            ) from exc

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
        """Delete our Jobs (with their Pods) created over ``older_than_s`` ago, and over their
        own ``activeDeadlineSeconds`` ago (a long session's Job may live that long); then our
        ConfigMaps created over ``older_than_s`` ago whose Job is not kept.

        ``older_than_s`` must exceed the longest run (pending timeout plus wall-time cap plus
        grace) or live runs are cut short. Returns how many sandboxes (distinct names) were
        removed; raises ``KubernetesUnavailable`` when the API cannot be reached.
        """
        core, batch = self._apis()
        now = dt.datetime.now(dt.UTC)
        removed: set[str] = set()
        kept: set[str] = set()
        try:
            for job in batch.list_namespaced_job(
                self.namespace, label_selector=MANAGED_SELECTOR
            ).items:
                meta = job.metadata
                if not _is_managed(meta.labels):
                    continue
                lifetime_s = max(older_than_s, getattr(job.spec, "active_deadline_seconds", 0) or 0)
                if _older_than(meta.creation_timestamp, lifetime_s, now):
                    self._remove_orphan(batch.delete_namespaced_job, meta.name, removed)
                else:
                    kept.add(meta.name)
            for configmap in core.list_namespaced_config_map(
                self.namespace, label_selector=MANAGED_SELECTOR
            ).items:
                meta = configmap.metadata
                if (
                    _is_managed(meta.labels)
                    and meta.name not in kept
                    and _older_than(meta.creation_timestamp, older_than_s, now)
                ):
                    self._remove_orphan(core.delete_namespaced_config_map, meta.name, removed)
        except ApiException as exc:
            raise KubernetesUnavailable(self._api_failure(exc, "list sandboxes")[1]) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesUnavailable(
                f"The Kubernetes API at {self.api_host} is unreachable: {exc}"
            ) from exc
        return len(removed)

    def _remove_orphan(self, delete: Any, name: str, removed: set[str]) -> None:
        try:
            delete(name, self.namespace, propagation_policy="Background")
            removed.add(name)
        except ApiException as exc:
            if exc.status != 404:
                logger.warning("could not remove orphan %s: %s", name, exc)

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


def _older_than(created: dt.datetime | None, age_s: float, now: dt.datetime) -> bool:
    return created is not None and created < now - dt.timedelta(seconds=age_s)


def _job_finished(job: Any) -> bool:
    conditions = getattr(job.status, "conditions", None) or []
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)
