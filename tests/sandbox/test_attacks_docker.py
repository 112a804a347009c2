"""The attack corpus against DockerBackend, on the engine's socket and through the socket
proxy: every hostile program ends contained and leaves nothing behind on the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from executions.judging import run_verdict
from sandbox.docker import DockerBackend

from .attacks import ATTACKS, CANARY_ENV, CANARY_VALUE, Attack
from .conformance import make_request, run_checked

pytestmark = [pytest.mark.real_service, pytest.mark.django_db]


@pytest.fixture(params=["direct", "proxy"])
def backend(
    request: pytest.FixtureRequest,
    runtime_image: str,
    require_docker: dict[str, Any],
    slot_dir: str,
) -> DockerBackend:
    """The engine's socket, and the shipped HAProxy allow-list in front of it."""
    if request.param == "proxy":
        return DockerBackend(
            base_url=request.getfixturevalue("docker_proxy_url"), lock_dir=slot_dir
        )
    return DockerBackend(**require_docker, lock_dir=slot_dir)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_attack_is_contained(
    attack: Attack,
    backend: DockerBackend,
    runtime_image: str,
    sandbox_gone: Callable[[str], bool],
    monkeypatch: pytest.MonkeyPatch,
    client: Client,
) -> None:
    monkeypatch.setenv(CANARY_ENV, CANARY_VALUE)
    request = make_request(runtime_image, attack.source, stdin=attack.stdin, **attack.limits)
    result = run_checked(backend, request, sandbox_gone)
    attack.check(result)
    assert run_verdict(result) == attack.verdict
    # The engine survived the attack and still runs ordinary programs.
    after = run_checked(backend, make_request(runtime_image, "print('ok')"), sandbox_gone)
    assert after.stdout == b"ok\n"
    # And the platform beside it still serves requests.
    assert client.get("/healthz").content == b"ok"
