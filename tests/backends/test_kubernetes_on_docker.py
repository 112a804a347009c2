"""KubernetesBackend end to end, without a cluster: the API emulator (kmock) holds the objects,
and a kubelet stand-in (``kube_docker.DockerKubelet``) runs each Job's pod on the local
Docker engine, streams its containers' logs back through the emulator and reports their
states. The shared conformance suites run against it, so the backend, its manifests and the
supervisor run as they would on a cluster, up to what only a cluster does (scheduling, the
NetworkPolicy, its out-of-memory killer; ``test_kubernetes_cluster`` covers those).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from executions.backends.kubernetes import KubernetesBackend, resource_name
from executions.backends.kubernetes.manifests import HANDLE_LABEL
from tests.sandbox.conformance import BackendConformance
from tests.sandbox.sessions import SessionConformance

from .kube_docker import LABEL, DockerKubelet
from .kube_emulator import CONFIGMAPS, JOBS, Emulator, Logs
from .kube_helpers import NS, make_backend

pytestmark = pytest.mark.real_service


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
def sandbox_gone(
    emulator: Emulator, kubelet: DockerKubelet, docker_api: Any
) -> Callable[[str], bool]:
    """True when no Job or ConfigMap of the handle is left and its containers are gone."""

    def left(handle: str) -> list[str]:
        name = resource_name(handle)
        found = [
            f"{kind}/{obj}"
            for kind, resource in (("job", JOBS), ("configmap", CONFIGMAPS))
            for obj in emulator.names(resource, NS)
            if (emulator.get(resource, NS, obj) or {})
            .get("metadata", {})
            .get("labels", {})
            .get(HANDLE_LABEL)
            == name
        ]
        containers = docker_api.containers(all=True, filters={"label": f"{LABEL}=kube"})
        return found + [f"container/{c['Id'][:12]}" for c in containers if kubelet.running()]

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
