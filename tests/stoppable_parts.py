"""Parts that a test may stop: a throw-away ``redis-server`` and a throw-away PostgreSQL
cluster, each on a free port of its own (the shared ones on 6379 and 5432 are never touched;
the fault suite's, ``faults.parts``), and a database that cannot be reached at all, for this
thread and the threads it starts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.db import connections

from faults import parts
from faults.parts import PartUnavailable
from tests.conftest import require_real
from tests.test_docs import free_port


class RedisServer(parts.RedisServer):
    """``faults.parts.RedisServer``; a missing binary skips the test (fails it in CI)."""

    def __init__(self, directory: Path) -> None:
        try:
            super().__init__(directory)
        except PartUnavailable as exc:
            require_real(exc.part, exc.reason)


def redis_server(directory: Path) -> contextlib.AbstractContextManager[RedisServer]:
    return parts.redis_server(directory, RedisServer)


class PostgresCluster(parts.PostgresCluster):
    """``faults.parts.PostgresCluster``; a missing PostgreSQL skips the test (fails it in
    CI)."""

    def __init__(self) -> None:
        try:
            super().__init__()
        except PartUnavailable as exc:
            require_real(exc.part, exc.reason)


def postgres_cluster() -> contextlib.AbstractContextManager[PostgresCluster]:
    return parts.postgres_cluster(PostgresCluster)


@contextlib.contextmanager
def database_unreachable() -> Iterator[None]:
    """The default database, for this thread and any thread started meanwhile, is a
    PostgreSQL server on a port where nothing listens."""
    unreachable: dict[str, Any] = {
        **connections.settings["default"],
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "NAME": "evalplatform",
        "USER": "postgres",
        "PASSWORD": "",
        "CONN_MAX_AGE": 0,
        "OPTIONS": {"connect_timeout": 2},
    }
    handler_settings = connections.settings
    current = connections["default"]
    # Threads build their connection from the handler's settings; this thread has its own.
    connections.__dict__["settings"] = {**handler_settings, "default": unreachable}
    connections["default"] = connections.create_connection("default")
    try:
        yield
    finally:
        connections["default"].close()
        connections["default"] = current
        connections.__dict__["settings"] = handler_settings
