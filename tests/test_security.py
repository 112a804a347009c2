"""The security page, its posture checks, and the same checks in ``check --deploy``."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import Client

from executions import security
from executions.models import Runtime
from executions.security import Level

pytestmark = pytest.mark.django_db


def deploy_messages() -> dict[str, str]:
    return {
        message.id: message.msg
        for message in run_checks(include_deployment_checks=True)
        if message.id and message.id.startswith("executions.S")
    }


def levels() -> dict[str, Level]:
    return {check.name: check.level for check in security.posture_checks()}


@pytest.fixture
def bare_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("executions.security.container_evidence", lambda: "")
    monkeypatch.setattr("executions.security.socket_reachable", lambda path: False)


def test_a_quiet_host_passes(bare_host: None, runtime: Runtime) -> None:
    found = levels()
    assert found["Where the platform runs"] == Level.PASS
    assert found["Docker socket reachable from the platform"] == Level.PASS
    assert found["Sandbox network"] == Level.PASS
    assert deploy_messages() == {}


def test_sandbox_network_warns_on_the_page_and_in_check_deploy(
    bare_host: None, runtime: Runtime
) -> None:
    runtime.network_enabled = True
    runtime.save()
    assert levels()["Sandbox network"] == Level.WARN
    assert "python-3.11" in deploy_messages()["executions.S003"]


def test_docker_socket_inside_a_container_fails(
    settings: Any, monkeypatch: pytest.MonkeyPatch, runtime: Runtime
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "docker"}
    monkeypatch.setattr("executions.security.container_evidence", lambda: "/.dockerenv exists")
    monkeypatch.setattr("executions.security.socket_reachable", lambda path: True)
    found = levels()
    assert found["Where the platform runs"] == Level.FAIL
    assert found["Docker socket reachable from the platform"] == Level.FAIL
    assert "root on the host" in deploy_messages()["executions.S001"]


def test_disabled_in_a_container_passes(
    settings: Any, monkeypatch: pytest.MonkeyPatch, runtime: Runtime
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "disabled"}
    monkeypatch.setattr("executions.security.container_evidence", lambda: "/.dockerenv exists")
    monkeypatch.setattr("executions.security.socket_reachable", lambda path: False)
    assert levels()["Where the platform runs"] == Level.PASS


def test_weak_secret_and_debug_are_reported(
    settings: Any, bare_host: None, runtime: Runtime
) -> None:
    settings.DEBUG = True
    settings.SECRET_KEY = "short"
    found = levels()
    assert found["DEBUG"] == Level.WARN and found["SECRET_KEY"] == Level.FAIL


def test_page_shows_backend_and_comparison_to_everyone(client: Client, user: Any) -> None:
    client.force_login(user)
    page = client.get("/security/").content.decode()
    assert 'id="backend-name">fake<' in page
    for title in ("Disabled", "Docker on the local socket", "Docker behind the socket proxy"):
        assert title in page
    assert "cannot read" in page and "request bodies" in page
    assert 'id="posture"' not in page, "posture details are for staff"


def test_page_explains_how_to_turn_on_the_remote_service(client: Client, user: Any) -> None:
    client.force_login(user)
    page = client.get("/security/").content.decode()
    assert "not in this version yet" not in page, "every backend is available"
    for setting in (
        "EXECUTION_BACKEND=remote",
        "EXECUTION_REMOTE_URLS",
        "EXECUTION_SERVICE_SECRET",
        "python -m execution_service",
    ):
        assert setting in page


def test_page_shows_posture_to_staff(client: Client, staff: Any, bare_host: None) -> None:
    client.force_login(staff)
    page = client.get("/security/").content.decode()
    assert 'id="posture"' in page and "SECRET_KEY" in page


def test_page_needs_login(client: Client) -> None:
    assert client.get("/security/").status_code == 302


def test_page_explains_how_to_turn_on_kubernetes_jobs(client: Client, user: Any) -> None:
    client.force_login(user)
    page = client.get("/security/").content.decode()
    for setting in (
        "EXECUTION_BACKEND=kubernetes",
        "EXECUTION_KUBERNETES_NAMESPACE",
        "kubectl apply -k deploy/kubernetes",
        "KUBECONFIG",
    ):
        assert setting in page
