"""A small run of ``bench/api_load.py``: 60 submissions from concurrent clients through the
live server, run by a real qcluster (ORM broker, or Redis when REDIS_URL is set), every one
stored once and ended once."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django_q.conf import Conf
from rest_framework.authtoken.models import Token

from executions.models import Runtime, UserQuota
from tests.cluster import clusters

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

COUNT = 60
BENCH = Path(__file__).resolve().parents[2] / "bench" / "api_load.py"


def load_module() -> Any:
    spec = importlib.util.spec_from_file_location("api_load", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up by name while the class is being made.
    sys.modules.setdefault("api_load", module)
    spec.loader.exec_module(module)
    return module


def test_every_submission_ends_exactly_once(
    live_server: Any,
    runtime: Runtime,
    tmp_path: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = load_module()
    environ = {"EXECUTION_BACKEND": "fake"}
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        monkeypatch.setattr(Conf, "ORM", None)
        monkeypatch.setattr(Conf, "BROKER_CLASS", None)
        monkeypatch.setattr(Conf, "REDIS", redis_url)
        environ["REDIS_URL"] = redis_url
    else:
        monkeypatch.setattr(Conf, "ORM", "default")
    tokens = []
    for number in range(3):
        user = User.objects.create_user(f"load-{number}")
        UserQuota.objects.create(user=user, max_concurrent=1000, max_per_day=1000)
        tokens.append(Token.objects.create(user=user).key)
    tag = f"load-{uuid.uuid4().hex[:6]}"
    with clusters(tmp_path, settings, monkeypatch, **environ) as start:
        start()
        report = bench.submit_all(live_server.url, tokens, COUNT, 6, tag, runtime.name)
        bench.wait_terminal(tag, COUNT, timeout_s=120)
    figures = bench.verify(tag, COUNT, report.ids)
    assert report.failures == []
    assert figures["problems"] == []
    assert figures["statuses"] == {"finished": COUNT}
