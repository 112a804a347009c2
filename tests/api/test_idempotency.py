"""Idempotency keys: a retried request is replayed, not submitted twice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError
from rest_framework.test import APIClient

from executions.api import idempotency, views
from executions.models import Evaluation, IdempotencyKey, UserQuota
from tests.api.conftest import submission

pytestmark = pytest.mark.django_db


def post(client: APIClient, path: str, body: Any, **headers: str) -> Any:
    return client.post(path, body, format="json", headers=headers)


def test_same_key_replays_first_response(api: APIClient) -> None:
    first = post(api, "/api/v1/evaluations/", submission(), **{"Idempotency-Key": "k1"})
    again = post(api, "/api/v1/evaluations/", submission(), **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Evaluation.objects.count() == 1


def test_same_key_other_body_is_422(api: APIClient) -> None:
    post(api, "/api/v1/evaluations/", submission(), **{"Idempotency-Key": "k1"})
    other = post(api, "/api/v1/evaluations/", submission(stdin="x"), **{"Idempotency-Key": "k1"})
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert "different request" in other.json()["error"]["message"]
    assert Evaluation.objects.count() == 1


def test_keys_are_per_user(api: APIClient, other_api: APIClient) -> None:
    post(api, "/api/v1/evaluations/", submission(), **{"Idempotency-Key": "k1"})
    theirs = post(other_api, "/api/v1/evaluations/", submission(), **{"Idempotency-Key": "k1"})
    assert theirs.status_code == 201
    assert Evaluation.objects.count() == 2


def test_expired_key_is_forgotten(api: APIClient) -> None:
    post(api, "/api/v1/evaluations/", submission(), **{"Idempotency-Key": "k1"})
    old = IdempotencyKey.objects.get()
    IdempotencyKey.objects.filter(pk=old.pk).update(created_at=old.created_at - timedelta(hours=25))
    again = post(api, "/api/v1/evaluations/", submission(), **{"Idempotency-Key": "k1"})
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert Evaluation.objects.count() == 2


def test_errors_are_not_stored(api: APIClient) -> None:
    bad = post(api, "/api/v1/evaluations/", submission(runtime="x"), **{"Idempotency-Key": "k"})
    assert bad.status_code == 400
    assert not IdempotencyKey.objects.exists()


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_a_key_of_the_wrong_length_is_a_400_naming_the_header(api: APIClient, key: str) -> None:
    response = post(api, "/api/v1/evaluations/", submission(), **{"Idempotency-Key": key})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"Idempotency-Key": ["Give 1 to 255 characters."]}
    assert not Evaluation.objects.exists()
    assert not IdempotencyKey.objects.exists()


@pytest.mark.parametrize("key", ["cut", None])
def test_a_submission_cut_short_by_the_database_leaves_nothing(
    api: APIClient, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    """The database goes away after the submission is written, before its answer is read back
    (a restart cutting every connection): the client is told 503, so nothing may be stored,
    and the key must not stay "in progress": the retry submits."""
    answer_once = views._detail
    calls: list[int] = []

    def cut_once(request: Any, pk: int) -> Any:
        calls.append(pk)
        if len(calls) == 1:
            raise OperationalError("terminating connection due to administrator command")
        return answer_once(request, pk)

    monkeypatch.setattr(views, "_detail", cut_once)
    headers = {"Idempotency-Key": key} if key else {}
    refused = post(api, "/api/v1/evaluations/", submission(), **headers)
    assert refused.status_code == 503, refused.content
    assert refused.headers["Retry-After"] == "30"
    assert not Evaluation.objects.exists()
    assert not IdempotencyKey.objects.exists()

    again = post(api, "/api/v1/evaluations/", submission(), **headers)
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert list(Evaluation.objects.values_list("pk", flat=True)) == [again.json()["id"]]


def test_key_in_progress_is_reported(user: User) -> None:
    first = idempotency.idempotency_claim(user=user, key="busy", fingerprint="f")
    assert first.record_id is not None
    second = idempotency.idempotency_claim(user=user, key="busy", fingerprint="f")
    assert second.in_progress and second.record_id is None
    idempotency.idempotency_release(first.record_id)
    assert idempotency.idempotency_claim(user=user, key="busy", fingerprint="f").record_id


def test_batch_and_rerun_are_idempotent(api: APIClient, roomy_quota: UserQuota) -> None:
    items = {"items": [submission(), submission()]}
    first = post(api, "/api/v1/evaluations/batch/", items, **{"Idempotency-Key": "b"})
    again = post(api, "/api/v1/evaluations/batch/", items, **{"Idempotency-Key": "b"})
    assert first.json() == again.json()
    assert Evaluation.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_submit_once(user: User, runtime: Any, roomy_quota: UserQuota) -> None:
    """Eight clients retry one request at the same moment: one submission; the others wait
    on its key and get its response replayed."""
    import threading

    from django.db import connection

    from tests.api.conftest import client_for

    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def retry() -> None:
        try:
            client = client_for(user)
            barrier.wait()
            response = post(
                client, "/api/v1/evaluations/", submission(), **{"Idempotency-Key": "r"}
            )
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    assert len(statuses) == 8, f"only {len(statuses)} of 8 clients got an answer"
    assert Evaluation.objects.count() == 1
    assert statuses == [201] * 8
