"""Fixtures of the Kubernetes backend's tests: an API emulator, its client, pod logs, a backend."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from executions.backends.kubernetes import KubernetesBackend

from .kube_emulator import Emulator, Logs, now
from .kube_helpers import NS, make_backend


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    server = Emulator()
    # A real API server gives created objects a uid and a creation time; kmock does not.
    server.on_loop(
        lambda: (
            server.kmock[f"post /apis/batch/v1/namespaces/{NS}/jobs"]
            << (
                lambda req: {
                    **req.data,
                    "metadata": {
                        **req.data["metadata"],
                        "uid": "job-uid-1",
                        "creationTimestamp": now(),
                    },
                }
            )
        )
    )
    # The client asks for /version/, which kmock's built-in answer (/version) does not match.
    version = {
        "major": "1",
        "minor": "37",
        "gitVersion": "v1.37.0",
        "gitCommit": "0123456789abcdef0123456789abcdef01234567",
        "gitTreeState": "clean",
        "buildDate": "2026-08-26T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }
    server.on_loop(lambda: server.kmock["get /version/"] << version)
    yield server
    server.close()


@pytest.fixture
def api_client(emulator: Emulator) -> Any:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = emulator.url
    return client.ApiClient(configuration)


@pytest.fixture
def logs(emulator: Emulator) -> Logs:
    """Pod logs, fed by the test as the supervisor would write them."""
    served = Logs()
    emulator.on_loop(
        lambda: (
            emulator.kmock["get", re.compile(r"/api/v1/namespaces/[^/]+/pods/[^/]+/log")]
            << served.answer
        )
    )
    return served


@pytest.fixture
def backend(api_client: Any, logs: Logs) -> KubernetesBackend:
    return make_backend(api_client)
