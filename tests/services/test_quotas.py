"""Per-user quotas (executions at once and per 24 hours) and the platform's queue depth,
checked before anything is stored. The API's 429 and 503 answers are in
``tests/api/test_backpressure.py``."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from executions import services
from executions.models import AuditEvent, Evaluation, Execution, Runtime, UserQuota
from executions.models import TestCase as StoredTestCase
from executions.services import QuotaExceeded
from tests.web.support import submit_form

pytestmark = pytest.mark.django_db


def submit(user: User, runtime: Runtime, **kwargs: Any) -> Evaluation:
    return services.evaluation_submit(user=user, runtime=runtime, source="print(1)", **kwargs)


def stored() -> tuple[int, int, int, int]:
    return (
        Evaluation.objects.count(),
        Execution.objects.count(),
        StoredTestCase.objects.count(),
        AuditEvent.objects.count(),
    )


def test_defaults_come_from_settings(settings: Any, user: User) -> None:
    quota = UserQuota(user=user)
    assert (quota.effective_max_concurrent, quota.effective_max_per_day) == (4, 500)
    settings.EXECUTIONS = {**settings.EXECUTIONS, "QUOTA_MAX_CONCURRENT": 2}
    assert UserQuota(user=user).effective_max_concurrent == 2


def test_concurrent_limit_refuses_the_fifth_active_submission(user: User, runtime: Runtime) -> None:
    for _ in range(4):
        submit(user, runtime)
    before = stored()
    with pytest.raises(QuotaExceeded) as caught:
        submit(user, runtime, test_cases=[{"stdin": "1", "expected_output": "1"}])
    error = caught.value
    assert error.code == "quota_concurrent"
    assert (error.limit, error.value, error.retry_after_s) == ("max_concurrent", 4, 5)
    (message,) = error.message_dict["__all__"]
    assert "at most 4" in message and "max_concurrent" in message
    assert error.error_dict["__all__"][0].code == "quota_concurrent"
    assert stored() == before


def test_per_day_limit_counts_finished_runs_and_frees_as_the_window_moves(
    settings: Any, user: User, runtime: Runtime
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "QUOTA_MAX_PER_DAY": 3}
    for _ in range(3):
        services.execution_run(submit(user, runtime).executions.get().pk)
    assert not Execution.objects.filter(status__in=["queued", "running"]).exists()
    before = stored()
    with pytest.raises(QuotaExceeded) as caught:
        submit(user, runtime)
    assert caught.value.code == "quota_per_day"
    assert "at most 3" in caught.value.messages[0]
    assert "max_per_day" in caught.value.messages[0]
    # All three are a few moments old: the first frees a slot in about 24 hours.
    assert 86_000 < caught.value.retry_after_s <= 86_400  # type: ignore[operator]
    assert stored() == before

    oldest = Execution.objects.order_by("queued_at").first()
    assert oldest is not None
    Execution.objects.filter(pk=oldest.pk).update(queued_at=timezone.now() - timedelta(hours=23))
    with pytest.raises(QuotaExceeded) as caught:
        submit(user, runtime)
    assert 3_500 < caught.value.retry_after_s <= 3_600  # type: ignore[operator]

    Execution.objects.filter(pk=oldest.pk).update(queued_at=timezone.now() - timedelta(hours=25))
    submit(user, runtime)


def test_a_quota_row_overrides_the_defaults_for_that_user_only(
    user: User, other_user: User, runtime: Runtime
) -> None:
    UserQuota.objects.create(user=user, max_concurrent=1)
    submit(user, runtime)
    with pytest.raises(QuotaExceeded, match="at most 1 "):
        submit(user, runtime)
    for _ in range(4):
        submit(other_user, runtime)


def test_an_empty_field_in_the_row_keeps_the_default(
    settings: Any, user: User, runtime: Runtime
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "QUOTA_MAX_CONCURRENT": 2}
    UserQuota.objects.create(user=user, max_per_day=100)
    submit(user, runtime)
    submit(user, runtime)
    with pytest.raises(QuotaExceeded, match="at most 2 "):
        submit(user, runtime)


def test_staff_are_not_exempt(staff: User, runtime: Runtime) -> None:
    UserQuota.objects.create(user=staff, max_concurrent=0)
    with pytest.raises(QuotaExceeded) as caught:
        submit(staff, runtime)
    # No run ever ends to free a slot under a limit of 0: no retry time is offered.
    assert caught.value.retry_after_s is None


def test_reruns_count_and_are_refused_without_storing(user: User, runtime: Runtime) -> None:
    first = submit(user, runtime)
    for _ in range(2):
        submit(user, runtime)
    services.execution_rerun(user=user, evaluation=first)
    before = stored()
    with pytest.raises(QuotaExceeded, match="max_concurrent"):
        services.execution_rerun(user=user, evaluation=first)
    with pytest.raises(QuotaExceeded):
        submit(user, runtime)
    assert stored() == before
    assert first.executions.count() == 2


def test_a_rerun_by_staff_counts_against_the_owner(
    staff: User, user: User, runtime: Runtime
) -> None:
    UserQuota.objects.create(user=user, max_concurrent=1)
    evaluation = submit(user, runtime)
    with pytest.raises(QuotaExceeded):
        services.execution_rerun(user=staff, evaluation=evaluation)
    services.execution_run(evaluation.executions.get().pk)
    rerun = services.execution_rerun(user=staff, evaluation=evaluation)
    assert rerun.requested_by == staff


def test_cancelled_and_finished_executions_free_concurrent_slots(
    user: User, runtime: Runtime
) -> None:
    evaluations = [submit(user, runtime) for _ in range(4)]
    with pytest.raises(QuotaExceeded):
        submit(user, runtime)
    services.execution_cancel(user=user, execution=evaluations[0].executions.get())
    submit(user, runtime)
    with pytest.raises(QuotaExceeded):
        submit(user, runtime)
    services.execution_run(evaluations[1].executions.get().pk)
    assert evaluations[1].executions.get().status == "finished"
    submit(user, runtime)


def test_the_submit_page_shows_a_quota_refusal_above_the_form(
    client: Client, user: User, runtime: Runtime
) -> None:
    UserQuota.objects.create(user=user, max_concurrent=0)
    client.force_login(user)
    response = client.post(reverse("executions:evaluation-submit"), submit_form(runtime))
    assert response.status_code == 200
    errors = response.context["form"].non_field_errors()
    assert any("max_concurrent" in error for error in errors), errors
    assert "max_concurrent" in response.content.decode()
    assert not Evaluation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_submissions_cannot_overrun_the_limit(user: User, runtime: Runtime) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs row locks (PostgreSQL); SQLite serialises writers itself")
    UserQuota.objects.create(user=user, max_concurrent=2)
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            start.wait()
            submit(user, runtime)
            outcomes.append("stored")
        except QuotaExceeded:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["refused"] * 4 + ["stored"] * 2
    assert Execution.objects.filter(evaluation__owner=user).count() == 2


def test_web_submit_enforces_queue_depth(user: User, runtime: Any, settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "MAX_QUEUE_DEPTH": 0}
    client = Client()
    client.force_login(user)
    response = client.post(
        "/evaluations/new/",
        {
            "runtime": "python-3.11",
            "source": "print(1)\n",
            "stdin": "",
            "title": "",
            "cases-TOTAL_FORMS": "0",
            "cases-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "The platform is busy" in response.content.decode()
    assert Evaluation.objects.count() == 0
