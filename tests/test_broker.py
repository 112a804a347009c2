"""The embedded setup's broker: django-q2's ORM broker whose empty polls cost one query."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ

from executions.broker import ORMBroker

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> ORMBroker:
    monkeypatch.setattr(Conf, "POLL", 0.001)
    return ORMBroker(list_key="tests")


def test_the_embedded_setup_uses_it(settings: Any) -> None:
    if "orm" in settings.Q_CLUSTER:
        assert isinstance(get_broker(), ORMBroker)
    else:  # REDIS_URL: Redis is the broker, as configured
        assert "broker_class" not in settings.Q_CLUSTER


def test_an_empty_poll_is_one_query(broker: ORMBroker, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        assert not broker.dequeue()


def test_a_due_task_is_handed_out_once(broker: ORMBroker) -> None:
    task_id = broker.enqueue("payload")
    assert broker.dequeue() == [(task_id, "payload")]
    assert not broker.dequeue(), "a handed-out task is locked until its retry time"


def test_tasks_of_other_queues_and_locked_tasks_are_not_due(broker: ORMBroker) -> None:
    OrmQ.objects.create(key="other", payload="elsewhere", lock=timezone.now())
    OrmQ.objects.create(key="tests", payload="later", lock=timezone.now() + timedelta(minutes=5))
    assert not broker.dequeue()
    OrmQ.objects.filter(payload="later").update(lock=timezone.now() - timedelta(seconds=1))
    assert [payload for _, payload in broker.dequeue()] == ["later"]


def test_tasks_are_taken_oldest_first_and_locked_until_their_retry_time(
    broker: ORMBroker,
) -> None:
    first, second = broker.enqueue("first"), broker.enqueue("second")
    assert broker.dequeue() == [(first, "first")]
    locked = OrmQ.objects.get(pk=first).lock
    assert locked > timezone.now() + timedelta(seconds=Conf.RETRY - 5)
    assert broker.dequeue() == [(second, "second")]
