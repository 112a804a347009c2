"""KubernetesBackend (kubernetes/backend.py): objects, slots, cancel, API failures, health, orphans,
options.

No cluster runs here. The emulator (kmock) is a real HTTP server that stores objects and serves
create, patch, delete, list and watch; pod logs, errors and ``/version`` get explicit answers.
Status payloads follow the shapes of the Pod and Job API reference; the test plays the Job
controller and the kubelet.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import kmock
import pytest
from django.core.exceptions import ImproperlyConfigured

from executions.backends import get_backend
from executions.backends.kubernetes import (
    COMPONENT_LABEL,
    HANDLE_LABEL,
    JOB_LABEL,
    MANAGED_BY_LABEL,
    KubernetesBackend,
    KubernetesUnavailable,
)
from sandbox.contract import ErrorKind
from sandbox.options import OptionError

from .kube_emulator import CONFIGMAPS, JOBS, PLAYER_AGENT, Emulator, Logs, now
from .kube_helpers import (
    HANDLE,
    NS,
    Cluster,
    Observer,
    every_case_echoes,
    make_backend,
    make_request,
    make_session,
    play_session,
    wait_until,
)
from .test_kubernetes_manifests import allowed

OLD = "2020-01-01T00:00:00Z"
FORBIDDEN = (
    'jobs.batch is forbidden: User "system:serviceaccount:evalplatform:evalplatform" cannot '
    'create resource "jobs" in API group "batch" in the namespace "evalplatform-sandbox"'
)


# --- the run's objects and this worker's slots ---------------------------------------------------


def test_configmap_is_owned_by_the_job(
    emulator: Emulator, api_client: Any, logs: Logs, backend: KubernetesBackend
) -> None:
    owners: list[Any] = []

    def owned() -> bool:
        configmap = emulator.get(CONFIGMAPS, NS, HANDLE) or {}
        owners[:] = configmap.get("metadata", {}).get("ownerReferences", [])
        return bool(owners)

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        wait_until(owned)
        pod.echo_every_case()
        pod.end(0)

    play_session(emulator, api_client, logs, backend, make_session(), scenario)
    assert owners == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": HANDLE,
            "uid": "job-uid-1",
            "blockOwnerDeletion": False,
            "controller": False,
        }
    ]


def test_sessions_beyond_max_concurrent_per_worker_wait_then_fail_as_unavailable(
    emulator: Emulator, api_client: Any, logs: Logs
) -> None:
    backend = make_backend(api_client, max_concurrent_per_worker=1, slot_wait_s=0.2)

    def scenario(cluster: Cluster) -> None:
        pod = cluster.pod()
        pod.start()
        second = Observer()
        backend.run_session(make_session(handle="evalplatform-51-0"), second)
        failure = second.only_failure()
        assert failure.error_kind == ErrorKind.UNAVAILABLE
        assert "All 1 Kubernetes sandbox slots" in failure.error_message
        assert "raise max_concurrent_per_worker" in failure.error_message
        assert emulator.get(JOBS, NS, "evalplatform-51-0") is None
        pod.echo_every_case()
        pod.end(0)

    observer = play_session(emulator, api_client, logs, backend, make_session(), scenario)
    assert len(observer.results) == 3


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_deletes_every_job_of_the_session_and_nothing_else(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    """A session may be running its second Job (after a case ran out of memory)."""
    for name, handle in ((f"{HANDLE}-2", HANDLE), ("evalplatform-99-0", "evalplatform-99-0")):
        labels = {
            MANAGED_BY_LABEL: "evalplatform",
            COMPONENT_LABEL: "sandbox",
            HANDLE_LABEL: handle,
            JOB_LABEL: name,
        }
        for resource in (JOBS, CONFIGMAPS):
            emulator.put(
                resource, NS, {"metadata": {"name": name, "namespace": NS, "labels": labels}}
            )
    backend.cancel(HANDLE)
    assert emulator.names(JOBS, NS) == ["evalplatform-99-0"]
    assert emulator.names(CONFIGMAPS, NS) == ["evalplatform-99-0"]


def test_cancel_unknown_or_unmanaged_handles_is_ignored(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    backend.cancel("evalplatform-missing-0")
    emulator.put(JOBS, NS, {"metadata": {"name": "someone-else", "namespace": NS}})
    backend.cancel("someone-else")
    assert emulator.get(JOBS, NS, "someone-else") is not None
    labelled = {"metadata": {"name": "theirs", "namespace": NS, "labels": {HANDLE_LABEL: "theirs"}}}
    emulator.put(JOBS, NS, labelled)
    backend.cancel("theirs")
    assert emulator.get(JOBS, NS, "theirs") is not None, "a Job this backend did not make"


# --- the API's failures ------------------------------------------------------------------------


def answer_error(emulator: Emulator, route: str, status: int, reason: str, message: str) -> None:
    error = kmock.KubernetesError(status=status, reason=reason, message=message)
    # Above the fixture's own answer to creating a Job.
    emulator.on_loop(lambda: (emulator.kmock[route] ** 10) << error)


def test_rbac_refusal_names_the_service_account(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    answer_error(emulator, f"post /apis/batch/v1/namespaces/{NS}/jobs", 403, "Forbidden", FORBIDDEN)
    request = make_request()
    result = backend.run(request)
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "The platform's ServiceAccount may not create the Job" in result.error_message
    assert f"in namespace {NS!r} (RBAC, 403)" in result.error_message
    assert FORBIDDEN in result.error_message
    assert emulator.get(CONFIGMAPS, NS, request.handle) is None, "the ConfigMap was left behind"


def test_quota_refusal_is_not_blamed_on_rbac(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    message = 'jobs.batch "x" is forbidden: exceeded quota: sandbox, requested: count/jobs.batch=1'
    answer_error(emulator, f"post /apis/batch/v1/namespaces/{NS}/jobs", 403, "Forbidden", message)
    result = backend.run(make_request())
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "ResourceQuota" in result.error_message and "RBAC" not in result.error_message


def test_existing_job_is_a_clear_conflict_and_left_alone(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    request = make_request()
    earlier = {"metadata": {"name": request.handle, "namespace": NS, "labels": {"x": "earlier"}}}
    emulator.put(JOBS, NS, earlier)
    result = backend.run(request)
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert f"A Job named {request.handle!r} already exists" in result.error_message
    assert "earlier attempt" in result.error_message
    assert emulator.get(JOBS, NS, request.handle) == earlier, "another attempt's Job was touched"
    assert emulator.get(CONFIGMAPS, NS, request.handle) is None


def test_existing_configmap_is_a_clear_conflict_and_left_alone(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    request = make_request()
    earlier = {"metadata": {"name": request.handle, "namespace": NS}, "data": {"a": "b"}}
    emulator.put(CONFIGMAPS, NS, earlier)
    result = backend.run(request)
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert f"A ConfigMap named {request.handle!r} already exists" in result.error_message
    assert emulator.get(CONFIGMAPS, NS, request.handle) == earlier
    assert emulator.get(JOBS, NS, request.handle) is None, "a Job was started anyway"


def test_server_error_is_unavailable(emulator: Emulator, backend: KubernetesBackend) -> None:
    answer_error(
        emulator,
        f"post /api/v1/namespaces/{NS}/configmaps",
        500,
        "InternalError",
        "etcdserver: request timed out",
    )
    result = backend.run(make_request())
    assert result.error_kind == ErrorKind.UNAVAILABLE
    assert "failed (500)" in result.error_message
    assert "etcdserver: request timed out" in result.error_message


def test_unreachable_api_is_unavailable(emulator: Emulator) -> None:
    url = emulator.url
    emulator.close()
    backend = KubernetesBackend(host=url, namespace=NS)
    result = backend.run(make_request())
    assert result.error_kind == ErrorKind.UNAVAILABLE
    assert f"The Kubernetes API at {url} is unreachable" in result.error_message
    health = backend.health()
    assert not health.ok and "unreachable" in health.detail
    with pytest.raises(KubernetesUnavailable):
        backend.cancel("evalplatform-1-0")


def test_oversized_input_is_refused_before_anything_is_created(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    result = backend.run(make_request(stdin=b"x" * (2 * 1024 * 1024)))
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "ConfigMap" in result.error_message
    assert emulator.names(CONFIGMAPS, NS) == [] and emulator.names(JOBS, NS) == []


# --- orphans and health ------------------------------------------------------------------------


def managed(name: str, created: str, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "creationTimestamp": created,
            "labels": {MANAGED_BY_LABEL: "evalplatform", COMPONENT_LABEL: "sandbox"},
        },
        **extra,
    }


def test_remove_orphans_deletes_only_old_managed_objects(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    emulator.put(JOBS, NS, managed("evalplatform-1-0", OLD))
    emulator.put(CONFIGMAPS, NS, managed("evalplatform-1-0", OLD))
    emulator.put(CONFIGMAPS, NS, managed("evalplatform-2-0", OLD))  # its Job already gone
    emulator.put(JOBS, NS, managed("evalplatform-3-0", now()))  # a live run
    unmanaged = managed("someone-else", OLD)
    unmanaged["metadata"]["labels"] = {"app": "other"}
    emulator.put(JOBS, NS, unmanaged)

    assert backend.remove_orphans(older_than_s=600) == 2
    assert emulator.names(JOBS, NS) == ["evalplatform-3-0", "someone-else"]
    assert emulator.names(CONFIGMAPS, NS) == []


def test_remove_orphans_leaves_a_long_session_within_its_own_deadline(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    """A session's Job may live longer than one run: until its activeDeadlineSeconds."""

    def job(name: str, deadline_s: int) -> dict[str, Any]:
        template = {"spec": {"containers": [{"name": "session", "image": "x"}]}}
        spec = {"activeDeadlineSeconds": deadline_s, "template": template}
        return managed(name, long_ago, spec=spec)

    long_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=900)).strftime("%Y-%m-%dT%H:%M:%SZ")
    emulator.put(JOBS, NS, job("evalplatform-5-0", 3600))
    emulator.put(CONFIGMAPS, NS, managed("evalplatform-5-0", long_ago))
    emulator.put(JOBS, NS, job("evalplatform-6-0", 300))
    assert backend.remove_orphans(older_than_s=600) == 1
    assert emulator.names(JOBS, NS) == ["evalplatform-5-0"]
    assert emulator.names(CONFIGMAPS, NS) == ["evalplatform-5-0"], "its Job is still live"


def test_health_reports_version_and_active_jobs(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    emulator.put(JOBS, NS, managed("evalplatform-1-0", now(), status={"active": 1}))
    done = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
    emulator.put(JOBS, NS, managed("evalplatform-2-0", now(), status=done))
    health = backend.health()
    assert health.ok, health.detail
    assert health.version == "v1.37.0"
    assert (health.capacity, health.in_use) == (8, 1)
    assert NS in health.detail


def test_health_without_rbac_says_so(emulator: Emulator, backend: KubernetesBackend) -> None:
    answer_error(
        emulator,
        f"get /apis/batch/v1/namespaces/{NS}/jobs",
        403,
        "Forbidden",
        'jobs.batch is forbidden: cannot list resource "jobs"',
    )
    health = backend.health()
    assert not health.ok
    assert "may not list jobs" in health.detail and "RBAC" in health.detail


# --- configuration -------------------------------------------------------------------------


def test_missing_kubeconfig_is_a_configuration_error_naming_the_variable(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # The cluster is only needed on first use.
    backend = KubernetesBackend(kubeconfig=str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="KUBECONFIG"):
        backend.api_client()
    result = backend.run(make_request())
    assert result.error_kind == ErrorKind.BACKEND_ERROR and "KUBECONFIG" in result.error_message
    health = backend.health()
    assert not health.ok and "KUBECONFIG" in health.detail


def test_broken_in_cluster_configuration_names_the_variable(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    backend = KubernetesBackend(kubeconfig=str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="KUBERNETES_SERVICE_HOST") as caught:
        backend.api_client()
    assert "token" in str(caught.value), "the in-cluster loader's own reason is kept"


@pytest.mark.parametrize(
    ("option", "value", "variable"),
    [
        ("tolerations", "{not json", "EXECUTION_KUBERNETES_TOLERATIONS"),
        ("tolerations", '{"key": "a"}', "EXECUTION_KUBERNETES_TOLERATIONS"),
        ("node_selector", "pool", "EXECUTION_KUBERNETES_NODE_SELECTOR"),
        ("max_concurrent_per_worker", 0, "EXECUTION_KUBERNETES_MAX_CONCURRENT"),
    ],
)
def test_invalid_options_name_their_variable(
    option: str, value: Any, variable: str, settings: Any
) -> None:
    with pytest.raises(OptionError, match=variable) as caught:
        KubernetesBackend(**{option: value})
    assert caught.value.option == option
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND_OPTIONS": {"kubernetes": {option: value}},
    }
    with pytest.raises(ImproperlyConfigured, match=variable) as configured:
        get_backend("kubernetes")
    assert f"['kubernetes']['{option}']" in str(configured.value)


def test_options_from_settings_are_parsed(settings: Any) -> None:
    options = {
        "namespace": "sandboxes",
        "node_selector": "pool=sandbox, zone=a",
        "tolerations": '[{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}]',
        "image_pull_secrets": ("registry",),
        "runtime_class": "gvisor",
    }
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND_OPTIONS": {"kubernetes": options}}
    backend = get_backend("kubernetes")
    assert isinstance(backend, KubernetesBackend)
    assert backend.options.node_selector == {"pool": "sandbox", "zone": "a"}
    assert backend.options.tolerations == (
        {"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"},
    )
    assert backend.options.image_pull_secrets == ("registry",)
    assert backend.describe().facts["runtime class"] == "gvisor"


def test_default_settings_build_the_backend_without_a_cluster() -> None:
    # The options in settings must be hashable (backends are cached by their options).
    backend = get_backend("kubernetes")
    assert isinstance(backend, KubernetesBackend)
    assert backend.namespace == "evalplatform-sandbox"
    assert backend.options.service_account == "evalplatform-sandbox"
    assert (backend.options.pending_timeout_s, backend.options.max_concurrent_per_worker) == (60, 8)
    # The reaper and the task timeout give a pod this long to be scheduled and started.
    assert backend.start_allowance_s == 60


def test_describe_states_the_live_configuration() -> None:
    assert KubernetesBackend(node_selector="pool=sandbox").describe().facts == {
        "namespace": "evalplatform-sandbox",
        "service account": "evalplatform-sandbox",
        "runtime class": "the cluster's default",
        "node selector": "pool=sandbox",
        "sandboxes at once per worker": "8",
    }


# --- least privilege -----------------------------------------------------------------------------

VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "DELETE": "delete"}


def test_backend_uses_only_what_the_platform_role_allows(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: Logs
) -> None:
    """Every API call of a session, a cancel, health and remove_orphans is one the Role in
    deploy/kubernetes/platform-rbac.yaml grants, in the sandbox namespace."""
    play_session(emulator, api_client, logs, backend, make_session(), every_case_echoes)
    cancelled = make_session(handle="evalplatform-42-0")

    def cancel(cluster: Cluster) -> None:
        cluster.pod().start()
        make_backend(api_client).cancel(cancelled.handle)

    observer = play_session(emulator, api_client, logs, backend, cancelled, cancel)
    assert observer.only_failure().error_kind == ErrorKind.CANCELLED
    backend.health()
    backend.remove_orphans(older_than_s=0)

    calls = set()
    for req in emulator.on_loop(lambda: list(emulator.kmock)):
        if req.headers.get("User-Agent") == PLAYER_AGENT or req.resource is None:
            continue  # the test's own calls, and /version (public to every client)
        verb = "patch" if req.method.value.upper() == "PATCH" else VERBS[req.action.name]
        resource = req.resource.plural + (f"/{req.subresource}" if req.subresource else "")
        calls.add((req.resource.group, resource, verb, req.namespace))
    assert {(group, resource, verb) for group, resource, verb, _ in calls} >= {
        ("batch", "jobs", "create"),
        ("", "pods/log", "get"),
        ("", "configmaps", "patch"),
    }, "the flows did not exercise the backend"
    for group, resource, verb, namespace in sorted(calls):
        assert namespace == NS, (group, resource, verb, namespace)
        assert allowed(group, resource, verb), f"the Role does not grant {verb} {resource}"
