"""The security page, its posture checks, and the same checks in ``check --deploy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import Client
from django.utils.html import escape

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
    monkeypatch.setattr("executions.environment.container_evidence", lambda: "")
    monkeypatch.setattr("executions.environment.socket_reachable", lambda path: False)


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
    monkeypatch.setattr("executions.environment.container_evidence", lambda: "/.dockerenv exists")
    monkeypatch.setattr("executions.environment.socket_reachable", lambda path: True)
    found = levels()
    assert found["Where the platform runs"] == Level.FAIL
    assert found["Docker socket reachable from the platform"] == Level.FAIL
    assert "root on the host" in deploy_messages()["executions.S001"]


def test_disabled_in_a_container_passes(
    settings: Any, monkeypatch: pytest.MonkeyPatch, runtime: Runtime
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "disabled"}
    monkeypatch.setattr("executions.environment.container_evidence", lambda: "/.dockerenv exists")
    monkeypatch.setattr("executions.environment.socket_reachable", lambda path: False)
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
    assert "<dt>runs</dt><dd>nothing: a stand-in for tests that pretends to</dd>" in page
    assert 'id="active-trusts"' not in page, "the test stand-in has no column of its own"


def test_page_states_the_active_backends_live_facts_and_its_trust(
    client: Client, user: Any, settings: Any
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "kubernetes",
        "BACKEND_OPTIONS": {"kubernetes": {"namespace": "judge-sandboxes"}},
    }
    client.force_login(user)
    page = client.get("/security/").content.decode()
    assert "<dt>namespace</dt><dd>judge-sandboxes</dd>" in page
    trusts = page[page.index('id="active-trusts"') :].split("</p>")[0]
    assert "Kubernetes Jobs." in trusts and "RBAC" in trusts


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


def test_anyone_may_read_the_trade_offs_but_not_the_posture(client: Client) -> None:
    response = client.get("/security/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "A compromised platform gets" in page and "Docker behind the socket proxy" in page
    assert 'id="posture"' not in page and "SECRET_KEY" not in page, "posture is staff-only"
    assert 'href="/login/"' in page


FACTS = {
    "kubernetes": security.MachineFacts(True, False, "/var/run/docker.sock", True),
    "remote": security.MachineFacts(False, True, "/var/run/docker.sock", True),
    "engine": security.MachineFacts(False, False, "/var/run/docker.sock", True),
    "installed": security.MachineFacts(False, False, "", True),
    "nothing": security.MachineFacts(False, False, "", False),
}


@pytest.mark.parametrize(
    ("machine", "command"),
    [
        ("kubernetes", "kubectl apply -k deploy/kubernetes"),
        ("remote", "EXECUTION_BACKEND=remote make run"),
        ("engine", "EXECUTION_BACKEND=docker make run"),
        ("installed", "scripts/start-dockerd.sh && EXECUTION_BACKEND=docker make run"),
        ("nothing", "EXECUTION_BACKEND=remote EXECUTION_REMOTE_URLS="),
    ],
)
def test_next_step_is_the_safest_thing_the_machine_offers(machine: str, command: str) -> None:
    step = security.next_step(FACTS[machine])
    assert step.command.startswith(command)
    assert step.summary and step.trade_off


def test_a_docker_next_step_says_what_holding_the_socket_costs() -> None:
    for machine in ("engine", "installed"):
        trade_off = security.next_step(FACTS[machine]).trade_off
        assert "holds the Docker socket" in trade_off and "root on its host" in trade_off
    assert "/var/run/docker.sock" in security.next_step(FACTS["engine"]).summary


def test_machine_facts_see_the_docker_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert security.machine_facts().docker_socket == ""
    monkeypatch.setattr("executions.environment.socket_reachable", lambda path: True)
    facts = security.machine_facts()
    assert facts.docker_socket == "/nonexistent/docker.sock" and not facts.in_kubernetes


def test_announcement_names_the_next_step_only_when_execution_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from executions.backends import Selection

    monkeypatch.setattr("executions.security.machine_facts", lambda: FACTS["engine"])
    off = Selection("disabled", "The platform runs inside a container (/.dockerenv exists).", False)
    text = security.backend_announcement(off)
    assert text.startswith("Execution backend: disabled. The platform runs inside a container")
    assert text.count("Execution backend:") == 1
    assert "Next step:" in text and "Trade-off:" in text
    assert text.splitlines()[-1] == "  EXECUTION_BACKEND=docker make run"
    on = Selection("docker", "Configured by EXECUTION_BACKEND.", True)
    assert security.backend_announcement(on) == (
        "Execution backend: docker. Configured by EXECUTION_BACKEND."
    )


def test_console_banner_and_page_name_the_same_next_step(
    client: Client, staff: Any, user: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": ""}
    monkeypatch.setattr("executions.environment.container_evidence", lambda: "/.dockerenv exists")
    monkeypatch.setattr("executions.security.machine_facts", lambda: FACTS["engine"])
    command = security.next_step(FACTS["engine"]).command
    client.force_login(staff)
    page = client.get("/security/").content.decode()
    assert 'id="next-step"' in page and command in page
    assert escape(security.next_step(FACTS["engine"]).trade_off) in page
    banner = client.get("/").content.decode()
    assert 'id="disabled-banner"' in banner and command in banner
    client.force_login(user)
    banner = client.get("/").content.decode()
    assert 'id="disabled-banner"' in banner and command not in banner, "the command is for staff"


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


def test_the_security_document_carries_the_pages_comparison_verbatim() -> None:
    # The trust prose is written once (BACKEND_PROFILES); the document must not drift from it.
    document = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    assert security.profiles_table() in document, (
        "docs/security.md: replace the comparison table with security.profiles_table()"
    )
