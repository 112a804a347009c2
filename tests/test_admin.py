"""Admin, the operator's console: staff only, run records read-only, actions go through
services and are audited, backend health never fails, list pages cost constant queries."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from executions import selectors, services
from executions.backends.fake import FakeBackend
from executions.models import AuditEvent, Evaluation, Execution, Runtime, UserQuota
from tests.services.conftest import fake

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


@pytest.mark.parametrize("model", ["evaluation", "execution", "runtime", "auditevent", "userquota"])
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
        "compile_command": '["gcc", ""]',
        "compile_time_limit_ms": 60_001,
        "compile_memory_mb": 512,
        "cpus": "1.00",
        "pids_limit": 64,
        "open_files_limit": 64,
        "scratch_mb": 16,
        "enabled": "on",
    }
    response = admin_client_.post(url, data)
    errors = response.context["adminform"].form.errors
    assert set(errors) == {
        "command",
        "default_time_limit_ms",
        "max_memory_mb",
        "compile_command",
        "compile_time_limit_ms",
    }, errors
    runtime.refresh_from_db()
    assert runtime.max_memory_mb == 512


def test_a_runtime_gets_a_compile_step_in_admin(admin_client_: Client, runtime: Runtime) -> None:
    url = reverse("admin:executions_runtime_change", args=[runtime.pk])
    form = admin_client_.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data |= {
        "command": '["python3", "gen.py"]',
        "compile_command": '["python3", "make.py"]',
        "compile_time_limit_ms": 20_000,
        "compile_memory_mb": 1024,
        "network_enabled": "",
        "enabled": "on",
    }
    response = admin_client_.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    runtime.refresh_from_db()
    assert runtime.compile_command == ["python3", "make.py"]
    assert (runtime.compile_time_limit_ms, runtime.compile_memory_mb) == (20_000, 1024)
    listing = admin_client_.get(reverse("admin:executions_runtime_changelist")).content.decode()
    assert "compiles" in listing


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


def test_execution_list_shows_the_operator_columns(
    admin_client_: Client, user: Any, runtime: Runtime
) -> None:
    make_evaluations(user, runtime, 1)
    # A filter with a single choice is not shown.
    Runtime.objects.create(name="other", display_name="Other", image="x", command=["x"])
    running = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    services.execution_claim(running.executions.get().pk)
    response = admin_client_.get(reverse("admin:executions_execution_changelist"))
    page = response.content.decode()
    for column in ("owner", "status", "verdict", "backend", "runtime", "duration", "score"):
        assert f"column-{column}" in page, column
    assert 'class="badge badge-finished"' in page and 'class="badge badge-accepted"' in page
    assert "running for" in page and runtime.name in page and "ada" in page
    filters = {spec.title for spec in response.context["cl"].filter_specs}
    assert {"status", "verdict", "backend", "runtime", "queued at"} <= filters, filters


def test_execution_search_by_owner_title_and_id(
    admin_client_: Client, user: Any, other_user: Any, runtime: Runtime
) -> None:
    (mine,) = make_evaluations(user, runtime, 1)
    services.evaluation_submit(user=other_user, runtime=runtime, source="1", title="Needle")
    url = reverse("admin:executions_execution_changelist")

    def found(term: str) -> set[int]:
        return {e.pk for e in admin_client_.get(url, {"q": term}).context["cl"].result_list}

    mine_id = mine.executions.get().pk
    assert found("Needle") == {Execution.objects.get(evaluation__title="Needle").pk}
    assert found("ada") == {mine_id}
    # "=id" and "=evaluation__id" both match a number; the execution is among the hits.
    assert mine_id in found(str(mine_id))


def test_coloured_status_is_escaped(admin_client_: Client, user: Any, runtime: Runtime) -> None:
    (evaluation,) = make_evaluations(user, runtime, 1)
    Execution.objects.filter(evaluation=evaluation).update(
        status="<b>x</b>", verdict="<i>y</i>", backend="<s>z</s>"
    )
    page = admin_client_.get(reverse("admin:executions_execution_changelist")).content.decode()
    assert "<b>x</b>" not in page and "<i>y</i>" not in page and "<s>z</s>" not in page
    assert 'class="badge badge-&lt;b&gt;x&lt;/b&gt;"' in page
    assert ">&lt;b&gt;x&lt;/b&gt;</span>" in page


def test_evaluation_page_shows_cases_executions_and_their_results(
    admin_client_: Client, user: Any, runtime: Runtime
) -> None:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=runtime,
        source="print(input())",
        test_cases=[
            {"name": "echo", "stdin": "1", "expected_output": "1"},
            {"name": "wrong", "stdin": "2", "expected_output": "3"},
        ],
    )
    services.execution_run(evaluation.executions.get().pk)
    url = reverse("admin:executions_evaluation_change", args=[evaluation.pk])
    admin_client_.get(url)  # warms the content-type cache
    with CaptureQueriesContext(connection) as one:
        page = admin_client_.get(url).content.decode()
    assert "echo" in page and "wrong" in page
    assert "badge-accepted" in page and "badge-wrong_answer" in page
    for _ in range(3):
        rerun = services.execution_rerun(user=user, evaluation=evaluation)
        services.execution_run(rerun.pk)
    with CaptureQueriesContext(connection) as four:
        admin_client_.get(url)
    assert len(four) == len(one), [q["sql"] for q in four.captured_queries]


def test_rerun_on_another_backend_asks_then_reruns_and_audits(
    admin_client_: Client, staff: Any, user: Any, runtime: Runtime
) -> None:
    evaluations = make_evaluations(user, runtime, 2)
    url = reverse("admin:executions_evaluation_changelist")
    selected = {"action": "rerun_on_backend", "_selected_action": [e.pk for e in evaluations]}
    page = admin_client_.post(url, selected)
    assert page.status_code == 200
    field = page.context["form"]["backend"]
    assert field.initial == "fake" and "fake (active)" in dict(field.field.choices)["fake"]
    assert not Execution.objects.filter(attempt=2).exists()

    response = admin_client_.post(url, {**selected, "apply": "Re-run", "backend": "fake"})
    assert response.status_code == 302
    reruns = Execution.objects.filter(attempt=2)
    assert sorted(reruns.values_list("evaluation_id", flat=True)) == sorted(
        e.pk for e in evaluations
    )
    assert set(reruns.values_list("backend", flat=True)) == {"fake"}
    assert set(reruns.values_list("requested_by", flat=True)) == {staff.pk}
    events = AuditEvent.objects.filter(action="rerun", execution__in=reruns)
    assert events.count() == 2 and set(events.values_list("actor", flat=True)) == {staff.pk}
    assert all(event.detail["backend"] == "fake" for event in events)


def test_rerun_on_another_backend_reports_errors_per_evaluation(
    admin_client_: Client, user: Any, other_user: Any, runtime: Runtime
) -> None:
    (refused,) = make_evaluations(user, runtime, 1)
    (accepted,) = make_evaluations(other_user, runtime, 1)
    UserQuota.objects.create(user=user, max_concurrent=0)
    response = admin_client_.post(
        reverse("admin:executions_evaluation_changelist"),
        {
            "action": "rerun_on_backend",
            "_selected_action": [refused.pk, accepted.pk],
            "apply": "Re-run",
            "backend": "fake",
        },
        follow=True,
    )
    notes = [str(message) for message in response.context["messages"]]
    assert any(str(refused) in note and "max_concurrent" in note for note in notes), notes
    assert any("Queued 1 re-run(s) on fake" in note for note in notes), notes
    assert accepted.executions.count() == 2 and refused.executions.count() == 1


def test_backend_health_is_staff_only(client: Client, user: Any) -> None:
    url = reverse("admin:executions_backend_health")
    assert url == "/admin/executions/backend-health/"
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_backend_health_shows_every_backend(admin_client_: Client) -> None:
    response = admin_client_.get("/admin/executions/backend-health/")
    assert response.status_code == 200
    rows = {row.name: row for row in response.context["rows"]}
    assert next(iter(rows)) == "fake" and {"disabled", "docker"} <= set(rows)
    assert rows["fake"].active and rows["fake"].health.ok
    assert rows["fake"].selection_reason == "Configured by EXECUTION_BACKEND."
    assert not rows["disabled"].active and not rows["disabled"].health.ok
    page = response.content.decode()
    assert "Fake backend: nothing is executed." in page
    assert "Execution is disabled: no code runs on this deployment." in page
    assert "runs: nothing: each run is refused, saying why" in page
    assert 'href="/security/"' in page and 'href="/security/#backends"' in page


def test_backend_health_shows_errors_instead_of_failing(
    admin_client_: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any) -> None:
        raise RuntimeError("engine <on fire>")

    monkeypatch.setattr(FakeBackend, "health", broken)
    response = admin_client_.get(reverse("admin:executions_backend_health"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "RuntimeError: engine &lt;on fire&gt;" in page
    assert "a stand-in for tests" in page  # describe() still answered


def test_a_hung_backend_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    release, returned = threading.Event(), threading.Event()

    def hangs(self: Any) -> None:
        release.wait(60)
        returned.set()

    monkeypatch.setattr(FakeBackend, "health", hangs)
    try:
        rows = {row.name: row for row in selectors.backends_overview(timeout_s=0.3)}
        # The overview answered while the health check was still hanging.
        assert not returned.is_set()
    finally:
        release.set()
    assert rows["fake"].health is None and "No answer within 0.3 s" in rows["fake"].health_error
    assert rows["disabled"].health is not None


def test_admin_index_links_the_operator_pages(admin_client_: Client) -> None:
    page = admin_client_.get(reverse("admin:index")).content.decode()
    assert 'href="/admin/executions/backend-health/"' in page
    assert 'href="/security/"' in page
    assert "executions/execution/" in page  # the app list is still there


def test_audit_trail_filters_by_actor(
    admin_client_: Client, staff: Any, user: Any, runtime: Runtime
) -> None:
    (evaluation,) = make_evaluations(user, runtime, 1)
    services.execution_rerun(user=staff, evaluation=evaluation)
    url = reverse("admin:executions_auditevent_changelist")
    response = admin_client_.get(url, {"actor__id__exact": staff.pk})
    assert [event.action for event in response.context["cl"].result_list] == ["rerun"]
    response = admin_client_.get(url, {"actor__id__exact": user.pk})
    assert [event.action for event in response.context["cl"].result_list] == ["submit"]


def test_quotas_in_admin_and_on_the_user_page(
    admin_client_: Client, user: Any, other_user: Any
) -> None:
    UserQuota.objects.create(user=user, max_concurrent=2)
    page = admin_client_.get(reverse("admin:executions_userquota_changelist"))
    assert page.status_code == 200
    (row,) = page.context["cl"].result_list
    assert row.effective_max_concurrent == 2 and row.effective_max_per_day == 500

    url = reverse("admin:auth_user_change", args=[other_user.pk])
    assert "execution_quota-0-max_concurrent" in admin_client_.get(url).content.decode()


def test_quota_list_costs_constant_queries(admin_client_: Client) -> None:
    url = reverse("admin:executions_userquota_changelist")

    def add_quotas(count: int) -> None:
        for _ in range(count):
            quota_user = User.objects.create_user(f"user{User.objects.count()}")
            UserQuota.objects.create(user=quota_user, max_per_day=10)

    add_quotas(2)
    with CaptureQueriesContext(connection) as few:
        admin_client_.get(url)
    add_quotas(8)
    with CaptureQueriesContext(connection) as many:
        admin_client_.get(url)
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


@pytest.mark.parametrize("model", ["evaluation", "execution"])
def test_history_cannot_be_deleted_in_admin(
    admin_client_: Client, user: Any, runtime: Runtime, model: str
) -> None:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=runtime,
        source="print(input())",
        test_cases=[{"name": "echo", "stdin": "1", "expected_output": "1"}],
    )
    services.execution_run(evaluation.executions.get().pk)
    record = evaluation if model == "evaluation" else evaluation.executions.get()
    changelist = reverse(f"admin:executions_{model}_changelist")
    actions = admin_client_.get(changelist).context["action_form"].fields["action"].choices
    assert "delete_selected" not in dict(actions)
    page = admin_client_.get(reverse(f"admin:executions_{model}_change", args=[record.pk]))
    html = page.content.decode()
    assert 'class="deletelink"' not in html and "-DELETE" not in html
    delete_url = reverse(f"admin:executions_{model}_delete", args=[record.pk])
    assert admin_client_.get(delete_url).status_code == 403
    assert admin_client_.post(delete_url, {"post": "yes"}).status_code == 403
    bulk = admin_client_.post(
        changelist, {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"}
    )
    assert bulk.status_code in (200, 302)
    assert Evaluation.objects.filter(pk=evaluation.pk).exists()
    assert evaluation.executions.count() == 1 and evaluation.test_cases.count() == 1
    assert evaluation.executions.get().results.count() == 1


def test_evaluation_page_shows_each_file_as_code(
    admin_client_: Client, user: Any, runtime: Runtime
) -> None:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=runtime,
        files=[
            {"name": "main.py", "content": "import helper\r\nprint(helper.x)\r\n"},
            {"name": "helper.py", "content": "x = '</code><script>alert(1)</script>'\r\n"},
        ],
    )
    # A name the services refuse, written straight to the row: the page must still escape it.
    Evaluation.objects.filter(pk=evaluation.pk).update(
        files=[*evaluation.files, {"name": "<b>bold</b>.py", "content": "pass"}]
    )
    url = reverse("admin:executions_evaluation_change", args=[evaluation.pk])
    html = admin_client_.get(url).content.decode()
    assert "\\r\\n" not in html and '"content":' not in html
    assert html.count('<figure class="source-file">') == 3
    assert '<figcaption class="source-file-name">main.py</figcaption>' in html
    assert "<pre><code>import helper\r\nprint(helper.x)\r\n</code></pre>" in html
    assert "&lt;/code&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html and "<b>bold</b>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;.py</figcaption>" in html
    assert "css/admin.css" in html


def test_backend_health_shows_a_backend_error_once(admin_client_: Client) -> None:
    # Remote has no service URLs in tests: building it fails, so health() and describe()
    # fail alike, with the same message.
    page = admin_client_.get(reverse("admin:executions_backend_health")).content.decode()
    assert page.count("The remote backend needs EXECUTION_REMOTE_URLS") == 1


def test_an_executions_compile_step_is_shown_read_only_and_escaped(
    admin_client_: Client, user: Any, compiling_runtime: Runtime
) -> None:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=compiling_runtime,
        source=fake(compile_exit_code=1, compile_stderr="error: <script>x</script>"),
    )
    execution = evaluation.executions.get()
    services.execution_run(execution.pk)
    url = reverse("admin:executions_execution_change", args=[execution.pk])
    page = admin_client_.get(url).content.decode()
    assert "error: &lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page
    assert "Compilation error" in page and "The compiler failed" in page
    assert "Save" not in page
    listing = admin_client_.get(reverse("admin:executions_execution_changelist")).content
    assert b"badge-compilation_error" in listing
