"""The evaluation list and logging in: pages that need a login, the filters, the login form."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from executions import services
from executions.models import Runtime

pytestmark = pytest.mark.django_db


def test_pages_require_login(client: Client) -> None:
    for name in ("executions:evaluation-list", "executions:evaluation-submit"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.get("/login/").status_code == 200


def test_login_with_password(client: Client, user: Any) -> None:
    response = client.post(
        "/login/", {"username": "ada", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    assert client.get(reverse("executions:evaluation-list")).status_code == 200


def test_empty_list_says_what_to_do(logged_in: Client) -> None:
    response = logged_in.get(reverse("executions:evaluation-list"))
    assert "Nothing submitted yet" in response.content.decode()


def test_list_filters_by_latest_status_verdict_and_runtime(
    logged_in: Client, user: Any, runtime: Runtime
) -> None:
    passed = services.evaluation_submit(user=user, runtime=runtime, source="print(1)", title="ok")
    services.execution_run(passed.executions.get().pk)
    failed = services.evaluation_submit(
        user=user, runtime=runtime, source='# fake: {"exit_code": 1}', title="crash"
    )
    services.execution_run(failed.executions.get().pk)
    services.evaluation_submit(user=user, runtime=runtime, source="print(1)", title="waiting")
    url = reverse("executions:evaluation-list")

    def titles(**query: str) -> list[str]:
        page = logged_in.get(url, query).context["page"]
        return [evaluation.title for evaluation in page.object_list]

    assert titles() == ["waiting", "crash", "ok"]
    assert titles(status="queued") == ["waiting"]
    assert titles(verdict="runtime_error") == ["crash"]
    assert titles(status="finished", verdict="accepted") == ["ok"]
    assert titles(runtime="other") == []
    assert "No evaluation matches" in logged_in.get(url, {"runtime": "other"}).content.decode()
    # The runtime filter groups versions by language, as the submit page's picker does.
    page = logged_in.get(url, {"runtime": runtime.name}).content.decode()
    assert (
        '<optgroup label="Python"><option value="python-3.11" selected>Python 3.11</option>'
        "</optgroup>"
    ) in page


def test_login_fields_are_styled_alike(client: Client) -> None:
    page = client.get("/login/").content.decode()
    assert '<div class="field"><label for="id_username">' in page
    assert '<div class="field"><label for="id_password">' in page
