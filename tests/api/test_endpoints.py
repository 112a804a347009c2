"""Every endpoint of /api/v1/, its permissions and its error paths."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from executions import services
from executions.models import Evaluation, Execution, Runtime, SelfTestStatus, Status, UserQuota
from tests.api.conftest import submission
from tests.services.conftest import fake

pytestmark = pytest.mark.django_db

HIDDEN_CASES: list[dict[str, Any]] = [
    {"stdin": "1\n", "expected_output": "1\n", "name": "shown"},
    {"stdin": "secret-input\n", "expected_output": "secret-input\n", "hidden": True},
]


def submit(client: APIClient, **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/v1/evaluations/", submission(**overrides), format="json")
    assert response.status_code == 201, response.content
    return response.json()


def run_latest(evaluation_id: int) -> None:
    execution = Execution.objects.filter(evaluation_id=evaluation_id).latest("attempt")
    services.execution_run(execution.pk)


# Authentication ----------------------------------------------------------------------------


def test_unauthenticated_is_401_json(runtime: Runtime) -> None:
    response = APIClient().get("/api/v1/evaluations/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_bad_token_is_401(runtime: Runtime) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    response = client.get("/api/v1/runtimes/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_session_authentication_works(user: User, runtime: Runtime) -> None:
    client = APIClient()
    client.force_login(user)
    assert client.get("/api/v1/runtimes/").status_code == 200


def test_api_token_command_creates_and_revokes(user: User, capsys: Any) -> None:
    call_command("api_token", "create", user.username)
    key = capsys.readouterr().out.strip()
    assert Token.objects.get(user=user).key == key
    call_command("api_token", "create", user.username)
    assert capsys.readouterr().out.strip() == key
    call_command("api_token", "revoke", user.username)
    assert not Token.objects.filter(user=user).exists()


def test_api_token_command_makes_a_missing_user_only_when_asked(capsys: Any) -> None:
    with pytest.raises(CommandError, match=r"No user named 'ada'\. Add --create-user"):
        call_command("api_token", "create", "ada")
    call_command("api_token", "create", "ada", "--create-user")
    captured = capsys.readouterr()
    ada = User.objects.get(username="ada")
    assert captured.out.strip() == Token.objects.get(user=ada).key, "stdout is the token alone"
    assert "Created user 'ada'" in captured.err
    assert not ada.is_staff and not ada.has_usable_password()
    call_command("api_token", "create", "ada", "--create-user")
    assert capsys.readouterr().out.strip() == Token.objects.get(user=ada).key
    assert User.objects.filter(username="ada").count() == 1


# Submit ------------------------------------------------------------------------------------


def test_submit_returns_evaluation_with_first_execution(api: APIClient) -> None:
    body = submit(api, stdin="hi\n", title="t", limits={"time_limit_ms": 1000})
    assert body["title"] == "t"
    assert body["time_limit_ms"] == 1000
    assert [e["status"] for e in body["executions"]] == ["queued"]
    assert body["executions"][0]["attempt"] == 1


def test_submit_several_files(api: APIClient) -> None:
    files = [{"name": "util.py", "content": "X = 1\n"}, {"name": "main.py", "content": "1\n"}]
    body = submit(api, source=None, files=files)
    assert [f["name"] for f in body["files"]] == ["main.py", "util.py"]


def test_submit_errors_name_fields(api: APIClient) -> None:
    response = api.post(
        "/api/v1/evaluations/",
        submission(
            source="",
            test_cases=[{"stdin": "1", "expected_output": "1", "weight": 0}],
            callback_url="ftp://example.org/",
        ),
        format="json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "test_cases[0].weight" in error["fields"]


def test_service_errors_map_to_fields(api: APIClient) -> None:
    response = api.post(
        "/api/v1/evaluations/",
        submission(runtime="cobol", callback_url="ftp://example.org/"),
        format="json",
    )
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert fields["runtime"] == ["Unknown runtime 'cobol'."]
    assert fields["callback_url"] == ["Must be an http:// or https:// URL."]


def test_limit_over_cap_is_400(api: APIClient) -> None:
    response = api.post(
        "/api/v1/evaluations/", submission(limits={"memory_mb": 100_000}), format="json"
    )
    assert response.status_code == 400
    assert "memory_mb" in response.json()["error"]["fields"]


def test_malformed_json_is_400(api: APIClient) -> None:
    response = api.post("/api/v1/evaluations/", data="{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


# Read --------------------------------------------------------------------------------------


def test_list_own_only_staff_all(
    api: APIClient, other_api: APIClient, staff_api: APIClient
) -> None:
    mine = submit(api)
    theirs = submit(other_api)
    assert [e["id"] for e in api.get("/api/v1/evaluations/").json()["results"]] == [mine["id"]]
    everyone = {e["id"] for e in staff_api.get("/api/v1/evaluations/").json()["results"]}
    assert everyone == {mine["id"], theirs["id"]}


def test_other_users_evaluation_is_404(api: APIClient, other_api: APIClient) -> None:
    theirs = submit(other_api)
    for path in ("", "cancel/", "rerun/"):
        method = api.get if not path else api.post
        response = method(f"/api/v1/evaluations/{theirs['id']}/{path}")
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_list_filters_ordering_and_pagination(api: APIClient, roomy_quota: UserQuota) -> None:
    ids = [submit(api)["id"] for _ in range(3)]
    run_latest(ids[0])
    finished = api.get("/api/v1/evaluations/?status=finished").json()
    assert [e["id"] for e in finished["results"]] == [ids[0]]
    assert finished["results"][0]["verdict"] == "accepted"
    queued = api.get("/api/v1/evaluations/?status=queued&ordering=id").json()
    assert [e["id"] for e in queued["results"]] == ids[1:]
    page = api.get("/api/v1/evaluations/?page_size=2&ordering=-id").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    assert api.get("/api/v1/evaluations/?runtime=other").json()["count"] == 0
    future = (timezone.now() + timedelta(days=1)).isoformat()
    assert api.get("/api/v1/evaluations/", {"created_after": future}).json()["count"] == 0
    assert api.get("/api/v1/evaluations/", {"created_before": future}).json()["count"] == 3
    bad = api.get("/api/v1/evaluations/?status=bogus&created_after=yesterday")
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) == {"status", "created_after"}


def test_page_size_is_capped(api: APIClient, settings: Any, roomy_quota: UserQuota) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "API_MAX_PAGE_SIZE": 2}
    for _ in range(3):
        submit(api)
    assert len(api.get("/api/v1/evaluations/?page_size=50").json()["results"]) == 2


def test_detail_with_results(api: APIClient) -> None:
    created = submit(api, test_cases=[{"stdin": "7\n", "expected_output": "7\n"}])
    run_latest(created["id"])
    body = api.get(f"/api/v1/evaluations/{created['id']}/").json()
    execution = body["executions"][0]
    assert execution["status"] == "finished" and execution["verdict"] == "accepted"
    assert execution["results"][0]["stdout"] == "7\n"
    assert body["test_cases"][0]["stdin"] == "7\n"
    # Nothing is hidden, so nothing of the execution's own is withheld (null) either.
    assert execution["stdout"] == "" and execution["redacted"] is False


def test_hidden_cases_are_redacted_for_owner(api: APIClient, staff_api: APIClient) -> None:
    created = submit(api, test_cases=HIDDEN_CASES)
    run_latest(created["id"])
    body = api.get(f"/api/v1/evaluations/{created['id']}/").json()
    text = str(body)
    assert "secret-input" not in text
    shown, hidden = body["test_cases"]
    assert shown["stdin"] == "1\n"
    assert hidden["stdin"] is None and hidden["expected_output"] is None
    results = body["executions"][0]["results"]
    assert results[0]["stdout"] == "1\n" and not results[0]["redacted"]
    assert results[1]["stdout"] is None and results[1]["redacted"]
    assert results[1]["stderr"] is None
    # The execution's own output is the deciding case's, which may be the hidden one.
    assert body["executions"][0]["stdout"] is None
    assert body["executions"][0]["redacted"] is True
    staff_view = staff_api.get(f"/api/v1/evaluations/{created['id']}/").json()
    # Staff see all of it: the hidden case, what the program printed for it, and the
    # execution's own (deciding) output.
    shown, hidden = staff_view["test_cases"]
    assert hidden["stdin"] == hidden["expected_output"] == "secret-input\n"
    staff_results = staff_view["executions"][0]["results"]
    assert staff_results[1]["stdout"] == "secret-input\n" and not staff_results[1]["redacted"]
    assert staff_view["executions"][0]["stdout"] is not None
    assert staff_view["executions"][0]["redacted"] is False


def test_nul_and_invalid_utf8_output(api: APIClient) -> None:
    created = submit(api)
    Execution.objects.filter(evaluation_id=created["id"]).update(
        status=Status.FINISHED, stdout=b"a\x00b\xff\xfe", stderr=b"\xc3", stdout_truncated=True
    )
    response = api.get(f"/api/v1/evaluations/{created['id']}/")
    assert response.status_code == 200
    execution = response.json()["executions"][0]
    assert execution["stdout"] == "a\u2400b\ufffd\ufffd"
    assert execution["stderr"] == "\ufffd"
    assert execution["stdout_truncated"] is True


def test_compile_output_is_shown_even_with_hidden_cases(
    api: APIClient, compiling_runtime: Runtime
) -> None:
    source = fake(compile_exit_code=1, compile_stderr="main.c:1: <script>x</script>\0")
    created = submit(api, runtime="c-gcc", source=source, test_cases=HIDDEN_CASES)
    run_latest(created["id"])
    execution = api.get(f"/api/v1/evaluations/{created['id']}/").json()["executions"][0]
    assert (execution["status"], execution["verdict"]) == ("finished", "compilation_error")
    assert execution["score"] == "0.00" and execution["results"] == []
    # The compiler's output is about the code alone: never redacted like a hidden case's.
    assert execution["redacted"] is True and execution["stdout"] is None
    assert execution["compile"] == {
        "status": "failed",
        "exit_code": 1,
        "signal": None,
        "output": "main.c:1: <script>x</script>\u2400",
        "output_truncated": False,
        "time_ms": execution["compile"]["time_ms"],
    }
    assert isinstance(execution["compile"]["time_ms"], int)


def test_compile_is_null_without_a_compile_step(api: APIClient, compiling_runtime: Runtime) -> None:
    plain = submit(api)
    run_latest(plain["id"])
    assert api.get(f"/api/v1/evaluations/{plain['id']}/").json()["executions"][0]["compile"] is None
    queued = submit(api, runtime="c-gcc")
    assert queued["executions"][0]["compile"] is None


def test_nul_in_input_is_400_not_500(api: APIClient) -> None:
    response = api.post("/api/v1/evaluations/", submission(stdin="a\x00b"), format="json")
    assert response.status_code == 400
    assert "stdin" in response.json()["error"]["fields"]


# Cancel and re-run --------------------------------------------------------------------------


def test_cancel_latest_active(api: APIClient) -> None:
    created = submit(api)
    body = api.post(f"/api/v1/evaluations/{created['id']}/cancel/").json()
    assert body["cancelled"] is True
    assert body["evaluation"]["executions"][0]["status"] == "cancelled"
    again = api.post(f"/api/v1/evaluations/{created['id']}/cancel/").json()
    assert again["cancelled"] is False


def test_rerun_makes_new_attempt(api: APIClient) -> None:
    created = submit(api)
    run_latest(created["id"])
    response = api.post(f"/api/v1/evaluations/{created['id']}/rerun/", {}, format="json")
    assert response.status_code == 201
    assert [e["attempt"] for e in response.json()["executions"]] == [2, 1]


def test_rerun_backend_is_staff_only(api: APIClient, staff_api: APIClient) -> None:
    created = submit(api)
    run_latest(created["id"])
    url = f"/api/v1/evaluations/{created['id']}/rerun/"
    response = api.post(url, {"backend": "disabled"}, format="json")
    assert response.status_code == 403
    assert "Only staff" in response.json()["error"]["message"]
    response = staff_api.post(url, {"backend": "disabled"}, format="json")
    assert response.status_code == 201
    assert response.json()["executions"][0]["backend"] == "disabled"
    response = staff_api.post(url, {"backend": "nosuch"}, format="json")
    assert response.status_code == 400
    assert "backend" in response.json()["error"]["fields"]


# Batch -------------------------------------------------------------------------------------


def test_batch_stores_all(api: APIClient, roomy_quota: UserQuota) -> None:
    items = [submission(stdin=str(n)) for n in range(3)]
    response = api.post("/api/v1/evaluations/batch/", {"items": items}, format="json")
    assert response.status_code == 201
    assert len(response.json()["items"]) == 3
    assert Evaluation.objects.count() == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [({"items": []}, "items"), ({"items": [submission(), {"source": "x"}]}, "items[1].runtime")],
)
def test_batch_shape_errors_name_the_field(
    api: APIClient, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/evaluations/batch/", body, format="json")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]
    assert Evaluation.objects.count() == 0


def test_batch_is_all_or_nothing(api: APIClient, roomy_quota: UserQuota) -> None:
    items = [submission(), submission(runtime="cobol"), submission(), submission(source="")]
    response = api.post("/api/v1/evaluations/batch/", {"items": items}, format="json")
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"items[1].runtime", "items[3].source"}
    assert Evaluation.objects.count() == 0
    assert Execution.objects.count() == 0


def test_batch_shape_errors_are_indexed(api: APIClient) -> None:
    items = [submission(), {"source": "x"}]
    response = api.post("/api/v1/evaluations/batch/", {"items": items}, format="json")
    assert response.status_code == 400
    assert "items[1].runtime" in response.json()["error"]["fields"]


def test_batch_size_is_capped(api: APIClient, settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "API_MAX_BATCH": 2}
    items = [submission()] * 3
    response = api.post("/api/v1/evaluations/batch/", {"items": items}, format="json")
    assert response.status_code == 400
    assert "at most 2" in response.json()["error"]["fields"]["items"][0]
    assert Evaluation.objects.count() == 0


# Runtimes, backends, webhook secret --------------------------------------------------------


def test_runtimes(api: APIClient, runtime: Runtime) -> None:
    Runtime.objects.create(name="off", display_name="Off", image="x", command=["x"], enabled=False)
    body = api.get("/api/v1/runtimes/").json()
    assert [r["name"] for r in body] == ["python-3.11"]
    assert body[0]["memory_mb"] == {"default": 256, "max": 512}
    assert body[0]["compiles"] is False


def test_runtimes_say_which_compile(api: APIClient, compiling_runtime: Runtime) -> None:
    body = api.get("/api/v1/runtimes/").json()
    assert {r["name"]: r["compiles"] for r in body} == {"c-gcc": True, "python-3.11": False}


def test_runtimes_show_compile_limits_and_self_test(
    api: APIClient, compiling_runtime: Runtime
) -> None:
    Runtime.objects.filter(name="c-gcc").update(
        self_test_status=SelfTestStatus.FAILED, self_test_detail="Expected '42', got ''."
    )
    body = {r["name"]: r for r in api.get("/api/v1/runtimes/").json()}
    c = body["c-gcc"]
    assert c["offered"] is False
    assert c["self_test"]["status"] == "failed" and "42" in c["self_test"]["detail"]
    assert c["compile_limits"] == {
        "time_limit_ms": compiling_runtime.compile_time_limit_ms,
        "memory_mb": compiling_runtime.compile_memory_mb,
    }
    python = body["python-3.11"]
    assert python["offered"] is True and python["compile_limits"] is None
    assert python["self_test"] == {"status": "untested", "detail": "", "tested_at": None}


def test_a_runtime_that_failed_its_self_test_takes_no_submission(
    api: APIClient, compiling_runtime: Runtime
) -> None:
    Runtime.objects.filter(name="c-gcc").update(
        self_test_status=SelfTestStatus.FAILED, self_test_detail="The compile step failed."
    )
    response = api.post("/api/v1/evaluations/", submission(runtime="c-gcc"), format="json")
    assert response.status_code == 400
    message = response.json()["error"]["fields"]["runtime"][0]
    assert "failed its self-test" in message and "compile step failed" in message


def test_backends_health_is_staff_only(api: APIClient, staff_api: APIClient) -> None:
    body = api.get("/api/v1/backends/").json()
    assert body["active"] == "fake" and body["reason"]
    assert "backends" not in body
    staff_body = staff_api.get("/api/v1/backends/").json()
    assert staff_body["backends"][0]["name"] == "fake"
    assert staff_body["backends"][0]["ok"] is True
    assert [row["name"] for row in staff_body["runtimes"]] == ["python-3.11"]


def test_backends_health_names_each_runtime_s_self_test(
    staff_api: APIClient, runtime: Runtime
) -> None:
    Runtime.objects.filter(pk=runtime.pk).update(self_test_status=SelfTestStatus.FAILED)
    (row,) = staff_api.get("/api/v1/backends/").json()["runtimes"]
    assert row == {
        "name": "python-3.11",
        "offered": False,
        "self_test_status": "failed",
        "self_tested_at": None,
    }


def test_webhook_secret_rotates(api: APIClient, user: User) -> None:
    first = api.post("/api/v1/webhook-secret/").json()["secret"]
    second = api.post("/api/v1/webhook-secret/").json()["secret"]
    assert first != second
    assert services.webhook_secret_for(user) == second


# Schema and docs ---------------------------------------------------------------------------


def test_schema_and_docs_are_served_without_cdn(runtime: Runtime) -> None:
    client = APIClient()
    schema = client.get("/api/v1/schema/?format=json")
    assert schema.status_code == 200
    assert "/api/v1/evaluations/" in schema.json()["paths"]
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "cdn" not in html.lower()
    assert "/static/drf_spectacular_sidecar/" in html


def test_hidden_cases_are_withheld_when_nobody_said_who_is_reading(
    runtime: Runtime, user: User
) -> None:
    """The serializers fail closed: without ``show_hidden`` in their context they redact."""
    from executions.api.serializers import TestCaseOutputSerializer, TestResultOutputSerializer

    evaluation = services.evaluation_submit(
        user=user, runtime=runtime, source="print(1)", test_cases=HIDDEN_CASES
    )
    run_latest(evaluation.pk)
    cases = list(evaluation.test_cases.order_by("position"))
    shown, hidden = TestCaseOutputSerializer(cases, many=True).data
    assert shown["stdin"] == "1\n"
    assert hidden["stdin"] is None and hidden["expected_output"] is None
    results = evaluation.executions.get().results.order_by("test_case__position")
    shown_result, hidden_result = TestResultOutputSerializer(results, many=True).data
    assert shown_result["redacted"] is False and shown_result["stdout"] is not None
    assert hidden_result["redacted"] is True and hidden_result["stdout"] is None
