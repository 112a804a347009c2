"""Real ``manage.py qcluster`` processes for tests, against the test database.

Used by tests that run with committed transactions (``transactional_db`` or ``live_server``)
so that the cluster, a separate process, sees what the test wrote.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection
from django_q.conf import Conf

ROOT = Path(__file__).resolve().parent.parent

ClusterFactory = Callable[..., subprocess.Popen[bytes]]


def database_url() -> str:
    """The test database as a URL the subprocess can use."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    credentials = quote(db["USER"] or "")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"])
    host = f"{credentials}@" if credentials else ""
    return f"postgres://{host}{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


@contextlib.contextmanager
def clusters(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch, **environ: str
) -> Iterator[ClusterFactory]:
    """Yield a function that starts a cluster (as often as a test asks); stop them all after.

    The cluster gets a queue of its own on the broker this process enqueues to, and shares
    this process's SECRET_KEY (tasks are signed with it); ``environ`` adds or overrides its
    environment.
    """
    name = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(Conf, "PREFIX", name)
    monkeypatch.setattr(Conf, "CLUSTER_NAME", name)
    settings.SECRET_KEY = "test-cluster-secret-" + uuid.uuid4().hex
    monkeypatch.setattr(Conf, "SECRET_KEY", settings.SECRET_KEY)
    base = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    base.update(
        DJANGO_SETTINGS_MODULE="evalplatform.settings",
        SECRET_KEY=settings.SECRET_KEY,
        DATABASE_URL=database_url(),
        EXECUTION_HEARTBEAT_INTERVAL_S="1",
        Q_CLUSTER_NAME=name,
        Q_WORKERS="2",
    )
    if not Conf.ORM and isinstance(Conf.REDIS, str):
        base["REDIS_URL"] = Conf.REDIS
    base.update(environ)
    processes: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "cluster.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        # A session of its own, so a test can kill the whole cluster as a crash would.
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=base,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(process)
        return process

    try:
        yield start
    finally:
        for process in processes:
            if process.poll() is None:
                # The cluster stops in order when only its main process is signalled.
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        log.close()


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = log.read_text()[-3000:] if log and log.exists() else ""
            pytest.fail(f"Timed out waiting for {what}.\n{detail}")
        time.sleep(0.1)
