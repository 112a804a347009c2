"""The task broker of the embedded setup: django-q2's ORM broker, with a cheap idle poll.

An idle cluster asks the broker for work every ``Q_CLUSTER["poll"]`` seconds, and that
interval is what a submission waits before a worker takes it. django-q2's ORM broker answers
each poll with a compiled queryset (~0.3 ms of CPU); this one first asks one fixed statement
whether any task is due (~20 us) and builds the queryset only when one is, so the cluster can
poll every 10 ms for ~1% of a core while idle.
"""

from __future__ import annotations

from time import sleep
from typing import Any

from django.db import connections
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ


class ORMBroker(ORM):
    """django-q2's ORM broker (``Q_CLUSTER["orm"]``) whose empty polls cost one cheap query."""

    def dequeue(self) -> Any:
        if self._has_due_task():
            return super().dequeue()
        sleep(Conf.POLL)
        return None

    def _has_due_task(self) -> bool:
        self.get_connection()  # closes a connection that broke or aged out, as every call does
        connection = connections[Conf.ORM]
        quote = connection.ops.quote_name
        lock = OrmQ._meta.get_field("lock")
        # Names from the model, quoted; the values are parameters.
        probe = (
            f"SELECT 1 FROM {quote(OrmQ._meta.db_table)} "  # noqa: S608
            f"WHERE {quote(OrmQ._meta.get_field('key').column)} = %s "
            f"AND {quote(lock.column)} < %s LIMIT 1"
        )
        now = lock.get_db_prep_value(timezone.now(), connection)
        with connection.cursor() as cursor:
            cursor.execute(probe, [self.list_key, now])
            return cursor.fetchone() is not None
