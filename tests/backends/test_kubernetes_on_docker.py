"""KubernetesBackend end to end, without a cluster: the API emulator (kmock) holds the objects,
and a kubelet stand-in (``kube_docker.DockerKubelet``) runs each Job's pod on the local
Docker engine, streams its containers' logs back through the emulator and reports their
states. The shared conformance suites and the attack corpus run against it, so the backend,
its manifests and the supervisor run as they would on a cluster, up to what only a cluster
does (scheduling, the NetworkPolicy, its out-of-memory killer; ``test_kubernetes_cluster``
covers those). Where the corpus expects more than the restricted profile allows, the
Kubernetes outcome is pinned instead, as the security page states it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from executions.backends.kubernetes import CONFIGMAP_BUDGET, KubernetesBackend, resource_name
from executions.backends.kubernetes.manifests import HANDLE_LABEL
from executions.judging import run_verdict
from sandbox.contract import ErrorKind, RunResult
from tests.sandbox.attacks import ATTACKS, CANARY_ENV, CANARY_VALUE, Attack, observed
from tests.sandbox.conformance import BackendConformance, make_request, run_checked
from tests.sandbox.sessions import SessionConformance

from .kube_docker import DockerKubelet
from .kube_emulator import CONFIGMAPS, JOBS, Emulator, Logs
from .kube_helpers import NS, make_backend

pytestmark = [pytest.mark.real_service, pytest.mark.slow]


@pytest.fixture
def kubelet(
    emulator: Emulator, api_client: Any, logs: Logs, docker_api: Any, runtime_image: str
) -> Iterator[DockerKubelet]:
    kubelet = DockerKubelet(emulator, api_client, logs, docker_api)
    yield kubelet
    kubelet.close()


@pytest.fixture
def backend(api_client: Any, kubelet: DockerKubelet) -> KubernetesBackend:
    return make_backend(api_client, pending_timeout_s=30, grace_s=3)


@pytest.fixture
def sandbox_gone(emulator: Emulator, kubelet: DockerKubelet) -> Callable[[str], bool]:
    """True when no Job or ConfigMap of the handle is left and no container of a pod (one
    session runs at a time here)."""

    def handle_of(resource: Any, name: str) -> str:
        labels = (emulator.get(resource, NS, name) or {}).get("metadata", {}).get("labels", {})
        return str(labels.get(HANDLE_LABEL, ""))

    def left(handle: str) -> list[str]:
        found = [
            f"{kind}/{name}"
            for kind, resource in (("job", JOBS), ("configmap", CONFIGMAPS))
            for name in emulator.names(resource, NS)
            if handle_of(resource, name) == resource_name(handle)
        ]
        return found + [f"container/{c['Id'][:12]}" for c in kubelet.containers()]

    def gone(handle: str) -> bool:
        deadline = time.monotonic() + 10
        while left(handle):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    return gone


class TestKubernetesOnDocker(BackendConformance, SessionConformance):
    # The supervisor reports each case's resident-set peak.
    measures_peak_memory = True


# --- the attack corpus, with what the restricted profile allows ---------------------------


def _only_the_binary_readable(result: RunResult) -> None:
    """The supervisor is no other user here: its binary, a read-only mount, is readable
    (it holds no secret); everything else of it stays out of reach (it is not dumpable)."""
    assert result.exit_code == 0, result.stderr[-2000:]
    allowed = {probe for probe, outcome in observed(result).items() if outcome == "ok"}
    assert allowed == {"read the supervisor binary"}, allowed


def _signals_ignored(result: RunResult) -> None:
    """The program may signal PID 1, its own uid; PID 1 ignores every signal it has no
    handler for, and the run reports normally."""
    facts = observed(result)
    assert facts["parent"] == 1, facts
    assert facts["attempts"]["kill group 1"] == "ESRCH", "kill(-1) reaches no one but itself"
    assert result.exit_code == 0 and not result.timed_out, result


# The attacks whose outcome on Kubernetes differs from the corpus's, and the Kubernetes one.
KUBERNETES: dict[str, Attack] = {
    attack.name: attack
    for attack in [
        # emptyDir cannot be noexec: scratch runs what the program writes there (it runs
        # programs of its own anyway). Everything else of this attack stays denied.
        replace(
            next(a for a in ATTACKS if a.name == "write_outside_scratch"),
            source=next(a for a in ATTACKS if a.name == "write_outside_scratch").source.replace(
                'probe("exec from scratch", lambda: exec_from("/tmp"))\n', ""
            ),
        ),
        replace(
            next(a for a in ATTACKS if a.name == "ptrace_or_read_the_supervisor"),
            check=_only_the_binary_readable,
        ),
        replace(
            next(a for a in ATTACKS if a.name == "kill_or_stop_the_supervisor"),
            check=_signals_ignored,
        ),
    ]
}


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_attack_is_contained(
    attack: Attack,
    backend: KubernetesBackend,
    runtime_image: str,
    sandbox_gone: Callable[[str], bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CANARY_ENV, CANARY_VALUE)
    attack = KUBERNETES.get(attack.name, attack)
    request = make_request(runtime_image, attack.source, stdin=attack.stdin, **attack.limits)
    if len(attack.stdin) > CONFIGMAP_BUDGET:
        # Input travels in a ConfigMap: more than it holds is refused before anything runs.
        result = run_checked(backend, request, sandbox_gone, expect_error=ErrorKind.BACKEND_ERROR)
        assert "ConfigMap" in result.error_message
        return
    result = run_checked(backend, request, sandbox_gone)
    attack.check(result)
    assert run_verdict(result) == attack.verdict


def test_scratch_runs_what_the_program_writes_there(
    backend: KubernetesBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
) -> None:
    """Where Docker mounts scratch noexec, an emptyDir cannot be."""
    source = (
        "import os\n"
        "open('/tmp/x.sh', 'w').write('#!/bin/sh\\necho ran from scratch\\n')\n"
        "os.chmod('/tmp/x.sh', 0o755)\n"
        "os.execv('/tmp/x.sh', ['/tmp/x.sh'])\n"
    )
    result = run_checked(backend, make_request(runtime_image, source), sandbox_gone)
    assert result.stdout == b"ran from scratch\n"
