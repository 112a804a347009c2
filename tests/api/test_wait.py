"""``?wait=N`` holds the request until the execution ends; here a worker thread runs it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from executions import services
from executions.models import Execution, Status
from tests.api.conftest import submission

pytestmark = pytest.mark.django_db(transaction=True)


def worker(stop: threading.Event) -> None:
    """Run queued executions as a cluster worker would, until told to stop."""
    try:
        while not stop.is_set():
            for pk in Execution.objects.filter(status=Status.QUEUED).values_list("pk", flat=True):
                services.execution_run(pk)
            time.sleep(0.05)
    finally:
        connection.close()


def test_wait_returns_finished_result(api: APIClient) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=worker, args=(stop,), daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        response = api.post(
            "/api/v1/evaluations/?wait=20", submission(stdin="hello\n"), format="json"
        )
    finally:
        stop.set()
        thread.join()
    assert response.status_code == 201
    execution = response.json()["executions"][0]
    assert execution["status"] == "finished"
    assert execution["stdout"] == "hello\n"
    assert time.monotonic() - started < 20


def test_a_retried_waiting_submission_waits_too_and_replays(api: APIClient) -> None:
    """The first wait ends with the run still queued (no worker yet); the retry, the same
    request with the same key, submits nothing and waits for that run."""
    first = api.post(
        "/api/v1/evaluations/?wait=2", submission(stdin="once\n"), format="json",
        headers={"Idempotency-Key": "w"},
    )  # fmt: skip
    assert first.json()["executions"][0]["status"] == "queued"
    stop = threading.Event()
    thread = threading.Thread(target=worker, args=(stop,), daemon=True)
    thread.start()
    try:
        again = api.post(
            "/api/v1/evaluations/?wait=2", submission(stdin="once\n"), format="json",
            headers={"Idempotency-Key": "w"},
        )  # fmt: skip
    finally:
        stop.set()
        thread.join()
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    [execution] = again.json()["executions"]
    assert (execution["status"], execution["stdout"]) == ("finished", "once\n")


def test_wait_is_capped(api: APIClient, settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "API_MAX_WAIT_S": 1}
    started = time.monotonic()
    response = api.post("/api/v1/evaluations/?wait=600", submission(), format="json")
    assert response.status_code == 201
    assert response.json()["executions"][0]["status"] == "queued"
    assert 0.9 < time.monotonic() - started < 5


def test_wait_must_be_a_number(api: APIClient) -> None:
    response = api.post("/api/v1/evaluations/?wait=soon", submission(), format="json")
    assert response.status_code == 400
    assert "wait" in response.json()["error"]["fields"]


def test_a_wait_polls_fast_first_then_backs_off(
    monkeypatch: Any, user: Any, runtime: Any, roomy_quota: Any
) -> None:
    # The poll interval is what a short run's client waits beyond the run: 10 ms at first.
    from executions import selectors

    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="pass\n")
    execution = evaluation.executions.get()
    Execution.objects.filter(pk=execution.pk).update(status=Status.RUNNING)
    slept: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(selectors.time, "sleep", sleep)
    monkeypatch.setattr(selectors.time, "monotonic", lambda: clock[0])
    assert selectors.execution_wait(execution.pk, timeout_s=3.0) is False
    fast = [delay for delay in slept if delay == selectors.WAIT_POLL_S]
    assert len(fast) >= 90, slept[:5]  # about a second at 10 ms
    assert max(slept) == 0.5 and slept[-1] <= 0.5
    assert sum(slept) == pytest.approx(3.0)


def test_a_wait_answers_at_once_for_an_ended_or_unknown_execution(
    monkeypatch: Any, user: Any, runtime: Any, roomy_quota: Any
) -> None:
    from executions import selectors

    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="pass\n")
    execution = evaluation.executions.get()
    Execution.objects.filter(pk=execution.pk).update(status=Status.FINISHED)
    monkeypatch.setattr(selectors.time, "sleep", lambda _: pytest.fail("slept"))
    assert selectors.execution_wait(execution.pk, timeout_s=3.0) is True
    assert selectors.execution_wait(execution.pk + 1000, timeout_s=3.0) is False
