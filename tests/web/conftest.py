"""Fixtures of the evaluator pages' tests: a logged-in client and a scripted backend."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from sandbox.contract import RunResult

from .support import ScriptedBackend


@pytest.fixture
def logged_in(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


@pytest.fixture
def scripted(settings: Any) -> dict[bytes, RunResult]:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "tests.web.support.ScriptedBackend"}
    ScriptedBackend.script = {}
    return ScriptedBackend.script
