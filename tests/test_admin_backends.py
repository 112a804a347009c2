"""Re-run on another backend: only backends configured here are offered, each with its health,
the active one preselected; an unhealthy one is refused before anything is queued; and a run
that its backend fails is logged once, with the execution id, the backend and the reason."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from executions import selectors, services
from executions.backends.fake import FakeBackend
from executions.models import Evaluation, Execution, Runtime

pytestmark = pytest.mark.django_db

# An address where nothing listens: a backend pointed at it is configured but not healthy.
CLOSED_URL = "http://127.0.0.1:9"
SECRET = "s" * 48


def with_options(settings: Any, **options: dict[str, Any]) -> None:
    backend_options = {**settings.EXECUTIONS.get("BACKEND_OPTIONS", {}), **options}
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND_OPTIONS": backend_options}


@pytest.fixture
def admin_client_(client: Client, staff: Any) -> Client:
    client.force_login(staff)
    return client


@pytest.fixture
def evaluation(user: Any, runtime: Runtime) -> Evaluation:
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    services.execution_run(evaluation.executions.get().pk)
    return evaluation


@pytest.fixture
def listening_socket(tmp_path: Path) -> Iterator[str]:
    """A unix socket that accepts connections, as a running Docker engine's does."""
    path = str(tmp_path / "engine.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    yield path
    server.close()


# Which backends are configured here ---------------------------------------------------------


def test_nothing_but_the_active_fake_is_offered_on_a_bare_machine(bare_machine: Path) -> None:
    for name in ("disabled", "fake", "docker", "remote", "kubernetes", "a.b.Backend"):
        assert not selectors.backend_configured(name), name
    (target,) = selectors.rerun_targets()
    assert target.name == "fake" and target.active and target.healthy
    assert target.health_detail == "Fake backend: nothing is executed."


def test_remote_is_configured_by_its_urls(bare_machine: Path, settings: Any) -> None:
    with_options(settings, remote={"urls": (CLOSED_URL,), "secret": SECRET})
    assert selectors.backend_configured("remote")


def test_kubernetes_is_configured_by_a_cluster_configuration(
    bare_machine: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(bare_machine / "elsewhere"))
    assert selectors.backend_configured("kubernetes")
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert selectors.backend_configured("kubernetes")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    (bare_machine / ".kube").mkdir()
    (bare_machine / ".kube" / "config").write_text("apiVersion: v1\n")
    assert selectors.backend_configured("kubernetes")
    (bare_machine / ".kube" / "config").unlink()
    assert not selectors.backend_configured("kubernetes")
    with_options(settings, kubernetes={"host": CLOSED_URL})
    assert selectors.backend_configured("kubernetes")
    with_options(settings, kubernetes={"kubeconfig": str(bare_machine / "cluster.yaml")})
    assert selectors.backend_configured("kubernetes")


def test_docker_is_configured_by_a_socket_that_answers_or_a_remote_engine(
    bare_machine: Path, settings: Any, monkeypatch: pytest.MonkeyPatch, listening_socket: str
) -> None:
    assert not selectors.backend_configured("docker")  # the socket file does not exist
    monkeypatch.setenv("DOCKER_HOST", f"unix://{listening_socket}")
    assert selectors.backend_configured("docker")
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")  # a socket proxy, say
    assert selectors.backend_configured("docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{bare_machine}/docker.sock")
    with_options(settings, docker={"base_url": "tcp://127.0.0.1:2375"})
    assert selectors.backend_configured("docker")


def test_configured_backends_come_with_their_health(bare_machine: Path, settings: Any) -> None:
    with_options(
        settings,
        remote={"urls": (CLOSED_URL,), "secret": SECRET},
        kubernetes={"host": CLOSED_URL},
    )
    targets = {target.name: target for target in selectors.rerun_targets()}
    assert list(targets) == ["fake", "kubernetes", "remote"]
    assert targets["fake"].healthy and targets["fake"].active
    assert not targets["remote"].healthy and not targets["remote"].active
    assert "0 of 1 execution services ready" in targets["remote"].health_detail
    assert not targets["kubernetes"].healthy
    assert "127.0.0.1:9" in targets["kubernetes"].health_detail


def test_disabled_is_never_offered_even_when_active(
    bare_machine: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "disabled"}
    assert selectors.rerun_targets() == []
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    (docker,) = selectors.rerun_targets()
    assert docker.name == "docker" and not docker.active and not docker.healthy


def test_a_failing_or_hung_health_check_is_reported_not_raised(
    bare_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any) -> None:
        raise RuntimeError("engine <on fire>")

    monkeypatch.setattr(FakeBackend, "health", broken)
    (target,) = selectors.rerun_targets()
    assert not target.healthy and target.health_error == "RuntimeError: engine <on fire>"

    release = threading.Event()
    monkeypatch.setattr(FakeBackend, "health", lambda self: release.wait(10))
    started = time.monotonic()
    try:
        (target,) = selectors.rerun_targets(timeout_s=0.3)
    finally:
        release.set()
    assert time.monotonic() - started < 3
    assert not target.healthy and target.health_error == "No answer within 0.3 s."


# The admin action ------------------------------------------------------------------------


def rerun(client: Client, evaluation: Evaluation, **data: Any) -> Any:
    return client.post(
        reverse("admin:executions_evaluation_changelist"),
        {"action": "rerun_on_backend", "_selected_action": [evaluation.pk], **data},
    )


def radios(html: str) -> dict[str, set[str]]:
    """The backend radio buttons on the page: value -> its flags (checked, disabled)."""
    found = {}
    for tag in re.findall(r'<input type="radio" name="backend"[^>]*>', html):
        value = re.search(r'value="([^"]*)"', tag)
        assert value is not None, tag
        found[value.group(1)] = {flag for flag in ("checked", "disabled") if f" {flag}" in tag}
    return found


def test_the_form_offers_configured_backends_with_their_health(
    admin_client_: Client, evaluation: Evaluation, bare_machine: Path, settings: Any
) -> None:
    with_options(settings, remote={"urls": (CLOSED_URL,), "secret": SECRET})
    html = rerun(admin_client_, evaluation).content.decode()
    # Neither disabled, nor docker (no engine), nor kubernetes (no cluster configuration).
    assert radios(html) == {"fake": {"checked"}, "remote": {"disabled"}}
    assert "fake (active) — healthy: Fake backend: nothing is executed." in html
    assert f"remote — not healthy: 0 of 1 execution services ready. {CLOSED_URL}" in html


def test_the_form_survives_a_health_check_that_raises(
    admin_client_: Client,
    evaluation: Evaluation,
    bare_machine: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: Any) -> None:
        raise RuntimeError("engine <on fire>")

    monkeypatch.setattr(FakeBackend, "health", broken)
    response = rerun(admin_client_, evaluation)
    assert response.status_code == 200
    html = response.content.decode()
    assert "not healthy: RuntimeError: engine &lt;on fire&gt;" in html
    assert radios(html) == {"fake": {"disabled"}}


def test_an_unhealthy_backend_is_refused_and_logged(
    admin_client_: Client,
    evaluation: Evaluation,
    bare_machine: Path,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with_options(settings, remote={"urls": (CLOSED_URL,), "secret": SECRET})
    with caplog.at_level(logging.WARNING, logger="executions"):
        response = rerun(admin_client_, evaluation, apply="Re-run", backend="remote")
    assert response.status_code == 200  # the form again, not a redirect
    notes = [str(message) for message in get_messages(response.wsgi_request)]
    assert len(notes) == 1 and not any("Queued" in note for note in notes), notes
    assert notes[0].startswith("Nothing was re-run. Backend remote is not healthy")
    assert evaluation.executions.count() == 1
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert f"evaluation(s) {evaluation.pk} on backend remote" in record.getMessage()
    assert "0 of 1 execution services ready" in record.getMessage()


@pytest.mark.parametrize("backend", ["kubernetes", "disabled", "no.such.Backend"])
def test_a_backend_that_is_not_offered_is_refused(
    admin_client_: Client, evaluation: Evaluation, bare_machine: Path, backend: str
) -> None:
    response = rerun(admin_client_, evaluation, apply="Re-run", backend=backend)
    assert response.status_code == 200
    (note,) = [str(message) for message in get_messages(response.wsgi_request)]
    assert note.startswith("Nothing was re-run. Select a valid choice.")
    assert evaluation.executions.count() == 1


def test_a_healthy_backend_is_queued(
    admin_client_: Client, evaluation: Evaluation, bare_machine: Path
) -> None:
    response = rerun(admin_client_, evaluation, apply="Re-run", backend="fake")
    assert response.status_code == 302
    notes = [str(message) for message in get_messages(response.wsgi_request)]
    assert notes == ["Queued 1 re-run(s) on fake."]
    assert evaluation.executions.get(attempt=2).backend == "fake"


# A run its backend fails is logged once ---------------------------------------------------


def backend_failures(caplog: pytest.LogCaptureFixture, execution: Execution) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and f"Execution {execution.pk} " in record.getMessage()
    ]


def test_a_run_the_backend_fails_is_logged_with_its_id(
    user: Any, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    source = '# fake: {"error_kind": "backend_error", "error_message": "engine gone"}\n'
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source=source)
    execution = evaluation.executions.get()
    with caplog.at_level(logging.INFO, logger="executions"):
        services.execution_run(execution.pk)
    execution.refresh_from_db()
    assert execution.status == "error" and execution.error_message == "engine gone"
    assert backend_failures(caplog, execution) == [
        f"Execution {execution.pk} failed on backend fake (backend_error): engine gone"
    ]


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        # Not configured: the backend cannot even be built.
        ("remote", "The remote backend needs EXECUTION_REMOTE_URLS"),
        # Built, but it finds no cluster when it runs.
        ("kubernetes", "No usable Kubernetes configuration"),
    ],
)
def test_a_rerun_on_an_unusable_backend_is_logged_with_its_id(
    user: Any,
    staff: Any,
    evaluation: Evaluation,
    bare_machine: Path,
    caplog: pytest.LogCaptureFixture,
    backend: str,
    reason: str,
) -> None:
    execution = services.execution_rerun(user=staff, evaluation=evaluation, backend=backend)
    with caplog.at_level(logging.INFO, logger="executions"):
        services.execution_run(execution.pk)
    execution.refresh_from_db()
    assert execution.status == "error" and reason in execution.error_message
    (line,) = backend_failures(caplog, execution)
    assert line.startswith(
        f"Execution {execution.pk} failed on backend {backend} (backend_error): "
    )
    assert reason in line


@pytest.mark.django_db(transaction=True)  # the run happens in a thread, on its own connection
def test_a_cancelled_run_is_not_logged_as_a_backend_failure(
    user: Any, staff: Any, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    evaluation = services.evaluation_submit(
        user=user, runtime=runtime, source='# fake: {"delay": 5}\n'
    )
    execution = evaluation.executions.get()
    worker = threading.Thread(target=services.execution_run, args=(execution.pk,))
    with caplog.at_level(logging.INFO, logger="executions"):
        worker.start()
        deadline = time.monotonic() + 5
        while (
            not Execution.objects.filter(pk=execution.pk, status="running")
            .exclude(backend_handle="")
            .exists()
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert services.execution_cancel(user=staff, execution=execution)
        worker.join(10)
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert backend_failures(caplog, execution) == []
