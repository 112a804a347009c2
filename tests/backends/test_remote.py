"""RemoteBackend against real execution services on loopback, over a real Docker engine:
the conformance and session suites, a cancel, an observer that stops and a deadline in the
middle of a session, authentication, caps, back-pressure, fail-over and a service killed
mid-run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from executions import services
from executions.backends.remote import RemoteBackend
from executions.models import Evaluation, Runtime
from sandbox import signing, wire
from sandbox.contract import ErrorKind, Session
from tests.sandbox.conformance import BackendConformance, make_request, run_checked
from tests.sandbox.sessions import SessionConformance

from .remote_service import REPO, Service, service_factory, start_service
from .sessions import Recorder, one_program_session

__all__ = ["service_factory"]

pytestmark = [pytest.mark.real_service, pytest.mark.slow]


@pytest.fixture(scope="module")
def remote_service(
    require_docker: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    service = start_service(tmp_path_factory.mktemp("remote"), require_docker)
    yield service
    service.stop()


def remote_backend(*services_: Service | str, secret: str, **options: Any) -> RemoteBackend:
    urls = [s if isinstance(s, str) else s.url for s in services_]
    return RemoteBackend(urls=urls, secret=secret, **options)


class TestRemoteConformance(BackendConformance, SessionConformance):
    measures_peak_memory = True  # the service runs the Docker backend

    @pytest.fixture
    def backend(self, remote_service: Service, runtime_image: str) -> RemoteBackend:
        return remote_backend(remote_service, secret=remote_service.secret)


# -- sessions: beyond the session suite, what the hop to a service adds


def test_a_cancel_mid_session_stops_the_running_case_and_the_rest(
    remote_service: Service, runtime_image: str, sandbox_gone: Callable[[str], bool]
) -> None:
    source = """
        import sys, time
        if sys.stdin.read() == "slow":
            print("sleeping", flush=True)
            time.sleep(60)
        print("quick")
        """
    session = one_program_session(runtime_image, source, [b"", b"slow", b""], wall_time_ms=30_000)
    backend = remote_backend(remote_service, secret=remote_service.secret)
    cancelled_at: list[float] = []

    def cancel_once_case_1_runs(index: int) -> None:
        # As the platform does from another process: cancel by the handle it was given.
        def cancel() -> None:
            time.sleep(1.0)
            cancelled_at.append(time.monotonic())
            backend.cancel(session.handle)

        if index == 1:
            threading.Thread(target=cancel).start()

    recorder = Recorder(on_start=cancel_once_case_1_runs)
    backend.run_session(session, recorder)
    ended_at = time.monotonic()
    assert recorder.told == [("starting", 0), ("ended", 0), ("starting", 1), ("ended", 1)]
    first, stopped = recorder.results.values()
    assert first.stdout == b"quick\n"
    assert stopped.error_kind == ErrorKind.CANCELLED, stopped
    assert ended_at - cancelled_at[0] < 3, "the cancel took effect within a second or two"
    assert_gone_soon(sandbox_gone, session.handle)


def test_an_observer_that_stops_early_cancels_the_session_on_the_service(
    remote_service: Service, runtime_image: str, sandbox_gone: Callable[[str], bool]
) -> None:
    source = """
        import sys, time
        if sys.stdin.read() == "slow":
            time.sleep(60)
        """
    session = one_program_session(
        runtime_image, source, [b"", b"slow", b"", b""], wall_time_ms=30_000
    )
    recorder = Recorder(stop_after=0)
    began = time.monotonic()
    remote_backend(remote_service, secret=remote_service.secret).run_session(session, recorder)
    assert time.monotonic() - began < 15, "run_session waited for the rest of the session"
    assert recorder.told == [("starting", 0), ("ended", 0)]
    answer = remote_service.call("GET", f"/v1/sessions/{session.handle}?after=1&wait=10")
    progress = wire.progress_from_json(answer.json())
    assert progress.state == "done"
    assert [(str(step), result.error_kind) for step, result in progress.results] == [
        ("case 1", ErrorKind.CANCELLED)
    ], "the service stopped the case that was running and ran no other"
    assert sandbox_gone(session.handle)


def test_a_session_past_its_deadline_is_cancelled_and_fails_its_step(
    remote_service: Service, runtime_image: str, sandbox_gone: Callable[[str], bool]
) -> None:
    """The deadline is the wall times of every step plus ``grace_s``: with no grace at all,
    a case that runs its full wall time cannot make it back in time."""
    session = one_program_session(
        runtime_image, "import time; time.sleep(60)", [b"", b""], wall_time_ms=1000
    )
    recorder = Recorder()
    backend = remote_backend(remote_service, secret=remote_service.secret, grace_s=0.01)
    began = time.monotonic()
    backend.run_session(session, recorder)
    assert time.monotonic() - began < 2 + 3
    (failure,) = recorder.failures()
    assert failure.error_kind == ErrorKind.BACKEND_ERROR
    assert "did not finish session" in failure.error_message
    assert failure is list(recorder.results.values())[-1], "the step that was due failed"
    assert_gone_soon(sandbox_gone, session.handle)


def assert_gone_soon(sandbox_gone: Callable[[str], bool], handle: str) -> None:
    """A cancel removes the sandbox as the session ends, not always before: allow it a
    moment."""
    deadline = time.monotonic() + 10
    while not sandbox_gone(handle):
        assert time.monotonic() < deadline, f"sandbox {handle} left behind"
        time.sleep(0.2)


# -- the service's door


def put_body(image: str, **limits: Any) -> tuple[str, bytes]:
    request = make_request(image, "print('should not run')", **limits)
    return request.handle, wire.dumps(wire.session_to_json(Session.of_request(request)))


def unsigned_put(service: Service, handle: str, body: bytes, headers: dict[str, str]) -> int:
    response = requests.put(
        f"{service.url}/v1/sessions/{handle}", data=body, headers=headers, timeout=10
    )
    assert "error" in response.json()
    return response.status_code


def test_unauthenticated_requests_are_refused_and_run_nothing(
    service_factory: Callable[..., Service],
    runtime_image: str,
    sandbox_gone: Callable[[str], bool],
) -> None:
    service = service_factory()
    handle, body = put_body(runtime_image)
    path = f"/v1/sessions/{handle}"
    good = signing.sign(service.secret, "PUT", path, body)
    wrong = signing.sign("x" * 40, "PUT", path, body)
    tampered = {**good}
    old = str(int(time.time()) - 3600)
    expired = {
        **good,
        signing.TIMESTAMP_HEADER: old,
        signing.SIGNATURE_HEADER: signing._signature(
            service.secret, "PUT", path, old, good[signing.NONCE_HEADER], body
        ),
    }
    assert unsigned_put(service, handle, body, {}) == 401
    assert unsigned_put(service, handle, body, wrong) == 401
    assert unsigned_put(service, handle, body, expired) == 401
    # The signature covers the body: the same headers over other code are refused.
    assert (
        unsigned_put(
            service, handle, body.replace(b'"execution_id":0', b'"execution_id":1'), tampered
        )
        == 401
    )
    # The signature covers the path: the same headers for another session id are refused.
    response = requests.put(
        f"{service.url}/v1/sessions/other-{handle}", data=body, headers=good, timeout=10
    )
    assert response.status_code == 401
    assert service.health()["sessions_started"] == 0
    assert sandbox_gone(handle)
    assert requests.get(f"{service.url}/v1/health", timeout=5).status_code == 401


def test_a_replayed_request_is_refused(service_factory: Callable[..., Service]) -> None:
    service = service_factory()
    headers = signing.sign(service.secret, "GET", "/v1/health")
    first = requests.get(f"{service.url}/v1/health", headers=headers, timeout=10)
    assert first.status_code == 200
    again = requests.get(f"{service.url}/v1/health", headers=headers, timeout=10)
    assert again.status_code == 401
    assert "replayed" in again.json()["error"]


def test_limits_above_the_service_caps_are_refused(
    service_factory: Callable[..., Service], runtime_image: str
) -> None:
    service = service_factory("--max-wall-time-ms", "2000", "--max-memory-mb", "64")
    handle, body = put_body(runtime_image, wall_time_ms=5000, memory_mb=128)
    response = service.call("PUT", f"/v1/sessions/{handle}", body)
    assert response.status_code == 400
    message = response.json()["error"]
    assert "wall_time_ms=5000 (cap 2000)" in message and "memory_mb=128 (cap 64)" in message
    result = remote_backend(service, secret=service.secret).run(
        make_request(runtime_image, "print(1)", wall_time_ms=5000)
    )
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "caps" in result.error_message
    assert service.health()["sessions_started"] == 0


def test_a_repeated_put_returns_the_existing_session(
    remote_service: Service, runtime_image: str
) -> None:
    handle, body = put_body(runtime_image)
    first = remote_service.call("PUT", f"/v1/sessions/{handle}", body)
    again = remote_service.call("PUT", f"/v1/sessions/{handle}", body)
    assert (first.status_code, again.status_code) == (202, 200)
    other = body.replace(b'"execution_id":0', b'"execution_id":1')
    assert remote_service.call("PUT", f"/v1/sessions/{handle}", other).status_code == 409
    ran = wire.progress_from_json(
        remote_service.call("GET", f"/v1/sessions/{handle}?wait=20").json()
    )
    assert [result.stdout for _, result in ran.results] == [b"should not run\n"]
    done = remote_service.call("GET", f"/v1/sessions/{handle}?after=1&wait=20").json()
    assert done == {"session_id": handle, "state": "done", "results": []}


def test_at_capacity_the_service_answers_429(
    service_factory: Callable[..., Service], runtime_image: str
) -> None:
    service = service_factory("--max-concurrent", "1")
    slow = make_request(runtime_image, "import time; time.sleep(30)", wall_time_ms=20000)
    body = wire.dumps(wire.session_to_json(Session.of_request(slow)))
    assert service.call("PUT", f"/v1/sessions/{slow.handle}", body).status_code == 202
    handle, other = put_body(runtime_image)
    busy = service.call("PUT", f"/v1/sessions/{handle}", other)
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    assert service.health()["in_use"] == 1
    # A cancel that comes before the sandbox exists stops the session at its next step;
    # keep cancelling until the sandbox is stopped too.
    deadline = time.monotonic() + 20
    while service.health()["in_use"]:
        assert time.monotonic() < deadline, "the session was never stopped"
        assert service.call("DELETE", f"/v1/sessions/{slow.handle}").status_code == 200
        time.sleep(0.25)
    done = wire.progress_from_json(service.call("GET", f"/v1/sessions/{slow.handle}").json())
    assert [result.error_kind for _, result in done.results] == [ErrorKind.CANCELLED]


def test_runs_land_on_the_live_service_when_another_is_down(
    service_factory: Callable[..., Service],
    runtime_image: str,
    sandbox_gone: Callable[[str], bool],
) -> None:
    live = service_factory()
    dead = service_factory(secret=live.secret)
    dead.kill()
    backend = remote_backend(dead, live, secret=live.secret)
    for _ in range(3):
        request = make_request(runtime_image, "print('ok')")
        assert run_checked(backend, request, sandbox_gone).stdout == b"ok\n"
    assert live.health()["sessions_started"] == 3
    health = backend.health()
    assert health.ok and "1 of 2 execution services ready" in health.detail


def test_no_service_answering_is_unavailable(runtime_image: str) -> None:
    backend = remote_backend("http://127.0.0.1:9", secret="s" * 40, failover_budget_s=0.5)
    result = backend.run(make_request(runtime_image, "print(1)"))
    assert result.error_kind == ErrorKind.UNAVAILABLE
    assert "No execution service took the session" in result.error_message
    assert not backend.health().ok


@pytest.mark.django_db(transaction=True)
def test_a_service_killed_mid_run_ends_the_execution_in_error(
    service_factory: Callable[..., Service],
    runtime: Runtime,
    runtime_image: str,
    user: Any,
    settings: Any,
    docker_api: Any,
) -> None:
    service = service_factory()
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "remote",
        "BACKEND_OPTIONS": {"remote": {"urls": (service.url,), "secret": service.secret}},
    }
    runtime.image = runtime_image
    runtime.save()
    evaluation: Evaluation = services.evaluation_submit(
        user=user, runtime=runtime, source="import time\ntime.sleep(30)\n", time_limit_ms=8000
    )
    execution = evaluation.executions.get()
    assert execution.backend == "remote"
    worker = threading.Thread(target=services.execution_run, args=(execution.pk,))
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while service.health()["in_use"] == 0:
            assert time.monotonic() < deadline, "the run never started on the service"
            time.sleep(0.1)
        time.sleep(1.0)  # let the sandbox start
        service.kill()
        worker.join(timeout=15)
        assert not worker.is_alive(), "execution_run did not return after the service died"
        execution.refresh_from_db()
        assert execution.status == "error", execution.status
        assert "stopped answering" in execution.error_message, execution.error_message
        assert service.url in execution.error_message
    finally:
        # The dead service's sandbox is an orphan its janitor would remove on restart.
        for container in docker_api.containers(
            all=True, filters={"label": f"evalplatform.execution={execution.pk}"}
        ):
            docker_api.remove_container(container["Id"], v=True, force=True)


def test_the_platform_with_the_remote_backend_never_imports_docker(tmp_path: Path) -> None:
    script = """
import sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
import evalplatform.urls, executions.admin, executions.services, executions.tasks
from executions.backends import get_backend, active_selection
backend = get_backend()
assert active_selection().name == backend.name == "remote", backend
backend.health(); backend.describe(); backend.cancel("evaltest-none")
from executions.security import posture_checks
posture_checks()
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "docker")))
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "evalplatform.settings",
        "DEBUG": "1",
        "EXECUTION_BACKEND": "remote",
        "EXECUTION_REMOTE_URLS": "http://127.0.0.1:9,http://127.0.0.1:10",
        "EXECUTION_SERVICE_SECRET": "s" * 40,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    completed = subprocess.run(
        [sys.executable, "-c", "import json\n" + script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []
