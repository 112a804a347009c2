"""The task broker of the embedded setup: django-q2's ORM broker, with a cheap idle poll.

An idle cluster asks the broker for work every ``Q_CLUSTER["poll"]`` seconds, and that
interval is what a submission waits before a worker takes it. django-q2's ORM broker answers
each poll with compiled querysets (~0.3 ms of CPU, and ~2 ms for each task it takes); this
one asks one fixed statement whether any task is due (~20 us), and takes the oldest with one
more (an ``UPDATE ... RETURNING``: SQLite 3.35 and PostgreSQL have it), so the cluster can poll
every 10 ms for ~1% of a core while idle.
"""

from __future__ import annotations

from datetime import timedelta
from time import sleep
from typing import Any

from django.db import connections
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ


class ORMBroker(ORM):
    """django-q2's ORM broker (``Q_CLUSTER["orm"]``) whose polls are fixed statements: an
    empty poll is one cheap query, and taking a task one more (oldest first)."""

    def dequeue(self) -> Any:
        if self._has_due_task():
            task = self._take_due_task()
            if task is not None:
                return [task]
        sleep(Conf.POLL)
        return None

    def _table(self) -> tuple[Any, dict[str, str]]:
        self.get_connection()  # closes a connection that broke or aged out, as every call does
        connection = connections[Conf.ORM or "default"]
        quote = connection.ops.quote_name
        names = {
            field: quote(OrmQ._meta.get_field(field).column) for field in ("id", "key", "lock")
        }
        names["payload"] = quote(OrmQ._meta.get_field("payload").column)
        names["table"] = quote(OrmQ._meta.db_table)
        return connection, names

    def _lock_value(self, connection: Any, moment: Any) -> Any:
        return OrmQ._meta.get_field("lock").get_db_prep_value(moment, connection)

    def _has_due_task(self) -> bool:
        connection, n = self._table()
        # Names from the model, quoted; the values are parameters.
        probe = f"SELECT 1 FROM {n['table']} WHERE {n['key']} = %s AND {n['lock']} < %s LIMIT 1"  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(probe, [self.list_key, self._lock_value(connection, timezone.now())])
            return cursor.fetchone() is not None

    def _take_due_task(self) -> tuple[int, str] | None:
        """Lock the oldest due task until its retry time and return it, in one statement; None
        if another cluster took it first (the outer condition is checked again under the row
        lock, so two clusters never both take one)."""
        connection, n = self._table()
        now = timezone.now()
        take = (
            f"UPDATE {n['table']} SET {n['lock']} = %s "  # noqa: S608
            f"WHERE {n['id']} = (SELECT {n['id']} FROM {n['table']} "
            f"WHERE {n['key']} = %s AND {n['lock']} < %s ORDER BY {n['id']} LIMIT 1) "
            f"AND {n['lock']} < %s RETURNING {n['id']}, {n['payload']}"
        )
        due = self._lock_value(connection, now)
        retry = self._lock_value(connection, now + timedelta(seconds=Conf.RETRY))
        with connection.cursor() as cursor:
            cursor.execute(take, [retry, self.list_key, due, due])
            row = cursor.fetchone()
        return (row[0], row[1]) if row else None
