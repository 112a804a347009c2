"""The suite runs on the parts it says it runs on.

``.ci/run`` runs the suite twice and says which database and broker each pass is for
(``EXPECT_DATABASE``, ``EXPECT_BROKER``); these tests fail when the pass is on something
else, so a misconfigured pass cannot quietly test SQLite twice.
"""

from __future__ import annotations

import os

import pytest
from django.db import connection
from django_q.brokers import get_broker

from tests.conftest import require_real


def expected(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        require_real(name, "set by .ci/run to the part this pass must run on")
    return value


@pytest.mark.django_db
def test_the_database_is_the_one_this_pass_is_for() -> None:
    assert connection.vendor == expected("EXPECT_DATABASE")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


@pytest.mark.django_db
def test_the_broker_is_the_one_this_pass_is_for() -> None:
    broker = get_broker()
    # The embedded broker is django-q2's ORM broker with cheaper polls (executions.broker).
    kinds = {kind.__name__.lower() for kind in type(broker).__mro__}
    assert expected("EXPECT_BROKER") in kinds, kinds
    assert broker.ping()
