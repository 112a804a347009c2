"""KubernetesBackend against a Kubernetes API emulator (kmock), the test playing the Job
controller and the kubelet: every flow of a run, the API's failures, cancel, orphans, health.

No cluster runs here. The emulator is a real HTTP server that stores objects and serves
create, patch, delete, list and watch; pod logs, errors and ``/version`` get explicit answers.
Status payloads follow the shapes of the Pod and Job API reference.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kmock
import pytest
from django.core.exceptions import ImproperlyConfigured

from executions.backends import get_backend
from executions.backends.kubernetes import (
    COMPONENT_LABEL,
    EXECUTION_LABEL,
    HANDLE_LABEL,
    MANAGED_BY_LABEL,
    KubernetesBackend,
    KubernetesUnavailable,
)
from sandbox.contract import ErrorKind, RunRequest, RunResult
from sandbox.options import OptionError
from sandbox.policy import Limits, SandboxPolicy

from .kube_emulator import (
    CONFIGMAPS,
    JOBS,
    PLAYER_AGENT,
    Emulator,
    KubeletPlayer,
    configmap_files,
    now,
)
from .test_kubernetes_manifests import allowed

NS = "evalplatform-sandbox"
OLD = "2020-01-01T00:00:00Z"
FORBIDDEN = (
    'jobs.batch is forbidden: User "system:serviceaccount:evalplatform:evalplatform" cannot '
    'create resource "jobs" in API group "batch" in the namespace "evalplatform-sandbox"'
)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    server = Emulator()
    # A real API server gives created objects a uid and a creation time; kmock does not.
    server.on_loop(
        lambda: (
            server.kmock[f"post /apis/batch/v1/namespaces/{NS}/jobs"]
            << (
                lambda req: {
                    **req.data,
                    "metadata": {
                        **req.data["metadata"],
                        "uid": "job-uid-1",
                        "creationTimestamp": now(),
                    },
                }
            )
        )
    )
    # The client asks for /version/, which kmock's built-in answer (/version) does not match.
    version = {
        "major": "1",
        "minor": "37",
        "gitVersion": "v1.37.0",
        "gitCommit": "0123456789abcdef0123456789abcdef01234567",
        "gitTreeState": "clean",
        "buildDate": "2026-08-26T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }
    server.on_loop(lambda: server.kmock["get /version/"] << version)
    yield server
    server.close()


@pytest.fixture
def api_client(emulator: Emulator) -> Any:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = emulator.url
    return client.ApiClient(configuration)


@pytest.fixture
def logs(emulator: Emulator) -> dict[str, bytes]:
    """Pod logs by container name; the emulator answers them honouring ``limitBytes``."""
    served: dict[str, bytes] = {}

    def answer(req: Any) -> bytes:
        data = served.get(req.params.get("container", ""), b"")
        limit = req.params.get("limitBytes")
        return data[: int(limit)] if limit else data

    emulator.on_loop(
        lambda: (
            emulator.kmock["get", re.compile(r"/api/v1/namespaces/[^/]+/pods/[^/]+/log")] << answer
        )
    )
    return served


def make_backend(api_client: Any, **options: Any) -> KubernetesBackend:
    defaults: dict[str, Any] = {
        "namespace": NS,
        "pending_timeout_s": 5,
        "grace_s": 2,
        "watch_timeout_s": 2,
    }
    return KubernetesBackend(api_client=api_client, **{**defaults, **options})


@pytest.fixture
def backend(api_client: Any) -> KubernetesBackend:
    return make_backend(api_client)


def make_request(
    handle: str = "evalplatform-41-0",
    *,
    stdin: bytes = b"input\x00\xff",
    files: dict[str, bytes] | None = None,
    **limits: Any,
) -> RunRequest:
    return RunRequest(
        execution_id=41,
        handle=handle,
        image="evalplatform/python:3.11",
        command=("python3", "main.py"),
        files=files or {"main.py": b"print('hello')\n", "pkg/util.py": b"\x00\x01binary"},
        stdin=stdin,
        policy=SandboxPolicy(
            limits=Limits(
                **{"wall_time_ms": 5000, "memory_mb": 128, "output_bytes": 1000, **limits}
            )
        ),
        labels={"evalplatform.evaluation": "7"},
    )


Scenario = Callable[[KubeletPlayer], None]


def log_reads(emulator: Emulator) -> list[Any]:
    return [
        req
        for req in emulator.on_loop(lambda: list(emulator.kmock))
        if str(req.url.path).endswith("/log")
    ]


def wait_for_log_reads(emulator: Emulator, count: int = 2) -> None:
    deadline = time.monotonic() + 10
    while len(log_reads(emulator)) < count:
        assert time.monotonic() < deadline, "the backend never read the logs"
        time.sleep(0.02)
    time.sleep(0.2)  # and took in what they held


def play(
    emulator: Emulator,
    api_client: Any,
    backend: KubernetesBackend,
    request: RunRequest,
    scenario: Scenario,
) -> RunResult:
    """Run ``request`` in a thread while ``scenario`` plays the cluster's side of it."""
    box: dict[str, RunResult] = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", backend.run(request)))
    worker.start()
    job = emulator.wait_for(JOBS, NS, request.handle)
    scenario(KubeletPlayer(api_client, NS, job))
    worker.join(timeout=60)
    assert not worker.is_alive(), "run() did not return"
    return box["r"]


def assert_cleaned_up(emulator: Emulator, handle: str) -> None:
    assert emulator.get(JOBS, NS, handle) is None, "the Job was left behind"
    assert emulator.get(CONFIGMAPS, NS, handle) is None, "the ConfigMap was left behind"


def finish(exit_code: int, reason: str = "") -> Scenario:
    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.scheduled()
        player.running()
        player.terminated(exit_code, reason)
        if exit_code == 0:
            player.job_complete()
        else:
            player.job_failed("BackoffLimitExceeded", "Job has reached the specified backoff limit")

    return scenario


# --- a run, start to end ---------------------------------------------------------------------


def test_success_returns_both_streams_and_cleans_up(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"program": b"hello\n\x00\xff", "stderr": b"warning\n"})
    seen: dict[str, Any] = {}
    request = make_request()

    def scenario(player: KubeletPlayer) -> None:
        seen["configmap"] = emulator.wait_for(CONFIGMAPS, NS, request.handle)
        seen["job"] = player.job
        finish(0)(player)

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert (result.exit_code, result.signal) == (0, None)
    assert (result.stdout, result.stderr) == (b"hello\n\x00\xff", b"warning\n")
    assert not (result.stdout_truncated or result.stderr_truncated)
    assert not (result.timed_out or result.oom_killed)
    assert result.handle == request.handle and result.wall_time_ms is not None
    assert_cleaned_up(emulator, request.handle)

    # The code and stdin arrived byte for byte, where the program looks for them.
    job = seen["job"]
    mounted = configmap_files(seen["configmap"], job)
    assert mounted == {
        "/sandbox/code/main.py": b"print('hello')\n",
        "/sandbox/code/pkg/util.py": b"\x00\x01binary",
        "/sandbox/stdin/stdin": b"input\x00\xff",
    }
    # Labels the NetworkPolicy and remove_orphans rely on, on every object.
    for obj in (job, job["spec"]["template"], seen["configmap"]):
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY_LABEL] == "evalplatform"
        assert labels[COMPONENT_LABEL] == "sandbox"
        assert labels[EXECUTION_LABEL] == "41"
        assert labels[HANDLE_LABEL] == request.handle


def test_configmap_is_owned_by_the_job(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    request = make_request()
    owners: list[Any] = []

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        deadline = time.monotonic() + 10
        while not owners and time.monotonic() < deadline:
            configmap = emulator.get(CONFIGMAPS, NS, request.handle) or {}
            owners.extend(configmap.get("metadata", {}).get("ownerReferences", []))
            time.sleep(0.02)
        player.terminated(0)

    assert play(emulator, api_client, backend, request, scenario).exit_code == 0
    assert owners == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": request.handle,
            "uid": "job-uid-1",
            "blockOwnerDeletion": False,
            "controller": False,
        }
    ]


def test_logs_are_read_with_a_byte_cap_per_container(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"program": b"ok\n"})
    result = play(emulator, api_client, backend, make_request(output_bytes=1000), finish(0))
    assert result.stdout == b"ok\n" and result.stderr == b""
    asked = [
        (req.params.get("container"), req.params.get("limitBytes"), req.params.get("follow"))
        for req in log_reads(emulator)
    ]
    assert sorted(asked) == [("program", "1001", "true"), ("stderr", "1001", "true")]


def test_output_over_the_cap_is_truncated_and_the_sandbox_killed(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"program": b"y" * 5000, "stderr": b"e" * 3})
    request = make_request(output_bytes=100)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()  # never terminates by itself

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert result.stdout == b"y" * 100
    assert result.stdout_truncated and result.output_limit_exceeded
    assert (result.exit_code, result.signal, result.timed_out) == (None, None, False)
    assert_cleaned_up(emulator, request.handle)


def test_output_exactly_at_the_cap_is_not_truncated(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"program": b"z" * 100, "stderr": b"e" * 100})
    result = play(emulator, api_client, backend, make_request(output_bytes=100), finish(0))
    assert result.stdout == b"z" * 100 and not result.stdout_truncated
    assert result.stderr == b"e" * 100 and not result.stderr_truncated
    assert result.exit_code == 0


def test_stderr_over_the_cap_is_truncated_on_its_own(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"stderr": b"e" * 101})
    result = play(emulator, api_client, backend, make_request(output_bytes=100), finish(0))
    assert result.stderr == b"e" * 100
    assert result.stderr_truncated and not result.stdout_truncated


def test_nonzero_exit(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"stderr": b"Traceback ...\nSystemExit: 3\n"})
    request = make_request()
    result = play(emulator, api_client, backend, request, finish(3))
    assert result.error_kind is None, result.error_message
    assert (result.exit_code, result.signal, result.oom_killed) == (3, None, False)
    assert result.stderr.endswith(b"SystemExit: 3\n")
    assert_cleaned_up(emulator, request.handle)


def test_death_by_signal(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    result = play(emulator, api_client, backend, make_request(), finish(137))
    assert (result.exit_code, result.signal, result.oom_killed) == (137, 9, False)


def test_oom_killed(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    result = play(emulator, api_client, backend, make_request(), finish(137, "OOMKilled"))
    assert result.error_kind is None
    assert result.oom_killed and result.exit_code == 137 and not result.timed_out


def test_job_deadline_exceeded_is_a_time_out(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    logs.update({"program": b"start\n"})
    request = make_request(wall_time_ms=30_000)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        wait_for_log_reads(emulator)  # the program printed while it ran
        player.job_failed("DeadlineExceeded", "Job was active longer than specified deadline")
        player.delete_pod()  # the Job controller deletes the active pod

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert result.timed_out and result.exit_code is None
    assert result.stdout == b"start\n"
    assert_cleaned_up(emulator, request.handle)


def test_pod_deleted_for_the_jobs_deadline_is_a_time_out(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    """The Job controller may delete the pod before the backend sees the Job fail."""
    request = make_request(wall_time_ms=30_000)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        wait_for_log_reads(emulator)
        job = emulator.get(JOBS, NS, request.handle)
        assert job is not None
        job["status"] = {
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}
            ]
        }
        emulator.put(JOBS, NS, job)  # stored without a watch event
        player.delete_pod()

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert result.timed_out


def test_pod_removed_by_someone_else_is_a_cancel(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    request = make_request(wall_time_ms=30_000)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        player.delete_pod()

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind == ErrorKind.CANCELLED
    assert "pod was removed" in result.error_message
    assert_cleaned_up(emulator, request.handle)


def test_wall_time_is_enforced_by_the_runner(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    request = make_request(wall_time_ms=300)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()  # and never ends

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert result.timed_out and result.exit_code is None
    assert result.wall_time_ms is not None and result.wall_time_ms >= 300
    assert_cleaned_up(emulator, request.handle)


def test_cancel_from_another_backend_instance(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    request = make_request(wall_time_ms=30_000)
    other = make_backend(api_client)  # as another worker process would have

    logs.update({"program": b"up\n"})

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        wait_for_log_reads(emulator)
        other.cancel(request.handle)
        assert emulator.get(JOBS, NS, request.handle) is None

    started = time.monotonic()
    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind == ErrorKind.CANCELLED, (result.error_kind, result.error_message)
    assert result.stdout == b"up\n", "the output read before the cancel is kept"
    assert time.monotonic() - started < 20  # long before the 30 s wall time
    assert_cleaned_up(emulator, request.handle)


def test_cancel_before_the_pod_exists(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend
) -> None:
    request = make_request(wall_time_ms=30_000)
    result = play(
        emulator, api_client, backend, request, lambda player: backend.cancel(request.handle)
    )
    assert result.error_kind == ErrorKind.CANCELLED
    assert_cleaned_up(emulator, request.handle)


def test_cancel_unknown_or_unmanaged_handles_is_ignored(
    emulator: Emulator, backend: KubernetesBackend
) -> None:
    backend.cancel("evalplatform-missing-0")
    emulator.put(JOBS, NS, {"metadata": {"name": "someone-else", "namespace": NS}})
    backend.cancel("someone-else")
    assert emulator.get(JOBS, NS, "someone-else") is not None


@pytest.mark.slow
def test_watches_resume_after_they_expire(
    emulator: Emulator, api_client: Any, logs: dict[str, bytes]
) -> None:
    # kmock ignores timeout_seconds; the client's read timeout (watch timeout + 5 s) ends
    # each watch instead, and the backend must start a new one without losing the run.
    backend = make_backend(api_client, watch_timeout_s=1)
    request = make_request(wall_time_ms=30_000)
    watches_before = len(
        [r for r in emulator.on_loop(lambda: list(emulator.kmock)) if "watch" in r.params]
    )

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        deadline = time.monotonic() + 30
        while True:  # until both watches were opened a second time
            watches = [
                r
                for r in emulator.on_loop(lambda: list(emulator.kmock))
                if "watch" in r.params and r.headers.get("User-Agent") != PLAYER_AGENT
            ]
            if len(watches) - watches_before >= 4:
                break
            assert time.monotonic() < deadline, "the watches were never resumed"
            time.sleep(0.2)
        player.terminated(0)

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind is None, result.error_message
    assert result.exit_code == 0


def test_runs_beyond_max_concurrent_per_worker_wait_then_fail_as_unavailable(
    emulator: Emulator, api_client: Any, logs: dict[str, bytes]
) -> None:
    backend = make_backend(api_client, max_concurrent_per_worker=1, slot_wait_s=0.2)
    first = make_request("evalplatform-50-0", wall_time_ms=30_000)

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        second = backend.run(make_request("evalplatform-51-0"))
        assert second.error_kind == ErrorKind.UNAVAILABLE
        assert "All 1 Kubernetes sandbox slots" in second.error_message
        assert "raise max_concurrent_per_worker" in second.error_message
        assert emulator.get(JOBS, NS, "evalplatform-51-0") is None
        player.terminated(0)

    assert play(emulator, api_client, backend, first, scenario).exit_code == 0


# --- pods that never run -------------------------------------------------------------------------


def test_unschedulable_pod_fails_after_the_pending_timeout(
    emulator: Emulator, api_client: Any, logs: dict[str, bytes]
) -> None:
    backend = make_backend(api_client, pending_timeout_s=1)
    request = make_request()

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.unschedulable("0/3 nodes are available: 3 Insufficient memory.")

    result = play(emulator, api_client, backend, request, scenario)
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "did not start within 1 s" in result.error_message
    assert "Unschedulable: 0/3 nodes are available: 3 Insufficient memory." in result.error_message
    assert_cleaned_up(emulator, request.handle)


def test_job_without_a_pod_says_where_to_look(emulator: Emulator, api_client: Any) -> None:
    backend = make_backend(api_client, pending_timeout_s=1)
    request = make_request()
    result = play(emulator, api_client, backend, request, lambda player: None)
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "created no pod within 1 s" in result.error_message
    assert f"describe job {request.handle}" in result.error_message
    assert_cleaned_up(emulator, request.handle)


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_image_errors_fail_at_once(emulator: Emulator, api_client: Any, reason: str) -> None:
    backend = make_backend(api_client, pending_timeout_s=300)
    request = make_request()
    message = 'rpc error: code = NotFound desc = failed to pull "evalplatform/python:3.11"'

    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.image_error(reason, message)

    started = time.monotonic()
    result = play(emulator, api_client, backend, request, scenario)
    assert time.monotonic() - started < 60  # not the 300 s pending timeout
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert f"{reason}: {message}" in result.error_message
    assert "evalplatform/python:3.11" in result.error_message
    assert_cleaned_up(emulator, request.handle)


def test_failed_preparation_names_what_the_image_lacks(
    emulator: Emulator, api_client: Any, backend: KubernetesBackend
) -> None:
    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.patch_pod(
            {
                "phase": "Failed",
                "initContainerStatuses": [player._terminated("prepare", 127, "Error")],
            }
        )

    result = play(emulator, api_client, backend, make_request(), scenario)
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "mkfifo" in result.error_message and "127" in result.error_message


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
    request = make_request(stdin=b"x" * (2 * 1024 * 1024))
    result = backend.run(request)
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
    emulator: Emulator, api_client: Any, backend: KubernetesBackend, logs: dict[str, bytes]
) -> None:
    """Every API call of a run, a cancel, health and remove_orphans is one the Role in
    deploy/kubernetes/platform-rbac.yaml grants, in the sandbox namespace."""
    play(emulator, api_client, backend, make_request(), finish(0))
    cancelled = make_request("evalplatform-42-0")

    def cancel(player: KubeletPlayer) -> None:
        player.create_pod()
        player.running()
        make_backend(api_client).cancel(cancelled.handle)

    assert play(emulator, api_client, backend, cancelled, cancel).error_kind == ErrorKind.CANCELLED
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
