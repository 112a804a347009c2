"""KubernetesBackend end to end on a real cluster: the shared conformance and session suites,
plus what only a cluster can show (no ServiceAccount token, no way to the API server).

No cluster can run on the development and CI machines, so this module runs only when
``KUBECONFIG`` names one (kind, k3d, minikube or a real cluster) and is skipped otherwise.
Prepare the cluster first:

* apply ``deploy/kubernetes`` (``kubectl apply -k deploy/kubernetes``): the sandbox namespace
  with Pod Security ``restricted``, its deny-all NetworkPolicy (a CNI that enforces
  NetworkPolicy is needed for ``test_network_is_off``) and its ServiceAccount;
* make the runtime image available to the nodes (e.g. ``kind load docker-image
  evalplatform/python:3.11``), or name another with ``EXECUTION_KUBERNETES_TEST_IMAGE``.

The backend takes its options from the ``EXECUTION_KUBERNETES_*`` settings, as in production;
the identity is the one in ``KUBECONFIG``, which needs at least the platform's Role.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from executions.backends.kubernetes import HANDLE_LABEL, KubernetesBackend, resource_name
from sandbox.contract import ExecutionBackend
from tests.sandbox.conformance import BackendConformance, make_request, run_checked
from tests.sandbox.sessions import SessionConformance

if not os.environ.get("KUBECONFIG"):
    pytest.skip(
        "no Kubernetes cluster: set KUBECONFIG to a cluster prepared with deploy/kubernetes "
        "to run the Kubernetes backend end to end",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.real_service, pytest.mark.slow]

# Pod deletion is in the background (the garbage collector removes a deleted Job's pod).
GONE_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def backend() -> KubernetesBackend:
    from executions.conf import execution_settings

    options = dict(execution_settings.BACKEND_OPTIONS.get("kubernetes", {}))
    backend = KubernetesBackend(**options)
    health = backend.health()
    if not health.ok:
        pytest.fail(f"KUBECONFIG is set but the cluster is not usable: {health.detail}")
    return backend


@pytest.fixture(scope="module")
def runtime_image() -> str:
    return os.environ.get("EXECUTION_KUBERNETES_TEST_IMAGE") or "evalplatform/python:3.11"


@pytest.fixture(scope="module")
def sandbox_gone(backend: KubernetesBackend) -> Callable[[str], bool]:
    """True when the run's Job, ConfigMap and Pod are all gone (waiting for the garbage
    collector to remove the Pod of a deleted Job)."""
    from kubernetes import client

    api = backend.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)

    def left(handle: str) -> list[str]:
        name = resource_name(handle)
        found = [
            f"job/{name}"
            for _ in batch.list_namespaced_job(
                backend.namespace, field_selector=f"metadata.name={name}"
            ).items
        ]
        found += [
            f"configmap/{name}"
            for _ in core.list_namespaced_config_map(
                backend.namespace, field_selector=f"metadata.name={name}"
            ).items
        ]
        found += [
            f"pod/{getattr(pod.metadata, 'name', '?')}"
            for pod in core.list_namespaced_pod(
                backend.namespace, label_selector=f"{HANDLE_LABEL}={name}"
            ).items
        ]
        return found

    def gone(handle: str) -> bool:
        deadline = time.monotonic() + GONE_WITHIN_S
        while left(handle):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    return gone


class TestKubernetesConformance(BackendConformance, SessionConformance):
    # The supervisor reports each case's resident-set peak.
    measures_peak_memory = True

    def test_network_is_off(self, run: Any) -> None:
        """A pod has an interface; the deny-all NetworkPolicy is what keeps it off the
        network (see test_no_service_account_token_and_no_api_server for the API server)."""
        result = run(
            """
            import socket
            try:
                socket.create_connection(("kubernetes.default.svc", 443), timeout=3).close()
                print("connected")
            except OSError as exc:
                print("blocked", type(exc).__name__)
            """
        )
        assert result.stdout.startswith(b"blocked"), result.stdout


def test_no_service_account_token_and_no_api_server(
    backend: ExecutionBackend, runtime_image: str, sandbox_gone: Callable[[str], bool]
) -> None:
    request = make_request(
        runtime_image,
        """
        import json, os, socket
        token = os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        port = int(os.environ.get("KUBERNETES_SERVICE_PORT", "443") or 443)
        try:
            socket.create_connection((host, port), timeout=2).close()
            api = "reached" if host else "no host"
        except OSError as exc:
            api = "blocked " + type(exc).__name__
        print(json.dumps({"token": token, "api": api, "uid": os.getuid()}))
        """,
    )
    result = run_checked(backend, request, sandbox_gone)
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout.splitlines()[-1])
    assert facts["token"] is False
    assert facts["api"] != "reached", "the sandbox reached the API server"
    assert facts["uid"] == 65534
