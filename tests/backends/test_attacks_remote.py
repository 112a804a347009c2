"""The attack corpus through RemoteBackend and a real execution service: every hostile program
ends contained, nothing is left on the engine, and the service keeps serving."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from executions.backends.remote import RemoteBackend
from executions.judging import run_verdict
from tests.sandbox.attacks import ATTACKS, CANARY_ENV, CANARY_VALUE, Attack
from tests.sandbox.conformance import make_request, run_checked

from .remote_service import Service, start_service

pytestmark = [pytest.mark.real_service]


@pytest.fixture(scope="module")
def attacked_service(
    require_docker: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    # The service's own environment carries the canary: a sandbox must not see it.
    service = start_service(tmp_path_factory.mktemp("remote-attacks"), require_docker)
    yield service
    service.stop()


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_attack_is_contained(
    attack: Attack,
    attacked_service: Service,
    runtime_image: str,
    sandbox_gone: Callable[[str], bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CANARY_ENV, CANARY_VALUE)
    backend = RemoteBackend(urls=[attacked_service.url], secret=attacked_service.secret)
    request = make_request(runtime_image, attack.source, stdin=attack.stdin, **attack.limits)
    result = run_checked(backend, request, sandbox_gone)
    attack.check(result)
    assert run_verdict(result) == attack.verdict
    after = run_checked(backend, make_request(runtime_image, "print('ok')"), sandbox_gone)
    assert after.stdout == b"ok\n"
    assert attacked_service.health()["ok"]
