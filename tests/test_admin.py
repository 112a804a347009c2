"""Admin: staff only, run records read-only, actions go through services, constant queries."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from executions import services
from executions.models import AuditEvent, Evaluation, Execution, Runtime

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client: Client, staff: Any) -> Client:
    client.force_login(staff)
    return client


def make_evaluations(user: Any, runtime: Runtime, count: int) -> list[Evaluation]:
    evaluations = []
    for index in range(count):
        evaluation = services.evaluation_submit(
            user=user, runtime=runtime, source=f"print({index})"
        )
        services.execution_run(evaluation.executions.get().pk)
        evaluations.append(evaluation)
    return evaluations


def test_non_staff_cannot_reach_admin(client: Client, user: Any) -> None:
    client.force_login(user)
    response = client.get(reverse("admin:executions_execution_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize("model", ["evaluation", "execution", "runtime", "auditevent"])
def test_changelists_render(admin_client_: Client, user: Any, runtime: Runtime, model: str) -> None:
    make_evaluations(user, runtime, 2)
    response = admin_client_.get(reverse(f"admin:executions_{model}_changelist"))
    assert response.status_code == 200


def test_run_records_are_read_only(admin_client_: Client, user: Any, runtime: Runtime) -> None:
    (evaluation,) = make_evaluations(user, runtime, 1)
    execution = evaluation.executions.get()
    assert admin_client_.get(reverse("admin:executions_execution_add")).status_code == 403
    url = reverse("admin:executions_execution_change", args=[execution.pk])
    page = admin_client_.get(url)
    assert page.status_code == 200 and b"Save" not in page.content
    admin_client_.post(url, {"status": "queued"})
    execution.refresh_from_db()
    assert execution.status == "finished"


def test_rerun_and_cancel_actions_are_audited(
    admin_client_: Client, staff: Any, user: Any, runtime: Runtime
) -> None:
    (evaluation,) = make_evaluations(user, runtime, 1)
    admin_client_.post(
        reverse("admin:executions_evaluation_changelist"),
        {"action": "rerun_evaluations", "_selected_action": [evaluation.pk]},
    )
    second = evaluation.executions.get(attempt=2)
    assert second.status == "queued"
    admin_client_.post(
        reverse("admin:executions_execution_changelist"),
        {"action": "cancel_executions", "_selected_action": [second.pk]},
    )
    second.refresh_from_db()
    assert second.status == "cancelled"
    actions = set(AuditEvent.objects.filter(actor=staff).values_list("action", flat=True))
    assert actions == {"rerun", "cancel"}


def test_runtime_caps_are_validated(admin_client_: Client, runtime: Runtime) -> None:
    url = reverse("admin:executions_runtime_change", args=[runtime.pk])
    data = {
        "name": runtime.name,
        "display_name": runtime.display_name,
        "language": "python",
        "image": runtime.image,
        "command": '"python3 main.py"',
        "file_name": "main.py",
        "default_time_limit_ms": 20_000,
        "max_time_limit_ms": 10_000,
        "default_memory_mb": 256,
        "max_memory_mb": 999_999,
        "default_output_kb": 64,
        "max_output_kb": 1024,
        "cpus": "1.00",
        "pids_limit": 64,
        "scratch_mb": 16,
        "enabled": "on",
    }
    response = admin_client_.post(url, data)
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"command", "default_time_limit_ms", "max_memory_mb"}, errors
    runtime.refresh_from_db()
    assert runtime.max_memory_mb == 512


@pytest.mark.parametrize("model", ["evaluation", "execution", "auditevent"])
def test_list_pages_cost_constant_queries(
    admin_client_: Client, user: Any, runtime: Runtime, model: str
) -> None:
    url = reverse(f"admin:executions_{model}_changelist")
    make_evaluations(user, runtime, 2)
    with CaptureQueriesContext(connection) as few:
        admin_client_.get(url)
    make_evaluations(user, runtime, 8)
    with CaptureQueriesContext(connection) as many:
        admin_client_.get(url)
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
    assert Execution.objects.count() == 10
