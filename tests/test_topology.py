"""The production topology for real, in containers built from the project's Dockerfile.

The platform image runs without the Docker socket: on its own it selects ``disabled``, its pages
say why, and a submission is refused without running. Then the platform runs with the remote
backend pointed at the execution-service container, the only one given the socket, and a
submitted program's output comes back.

The images come from ``make images`` (``scripts/build-images.sh``) and ``make runtime-image``;
CI builds them first. Containers talk over a user-defined network; the test reaches the platform
at its address on that network.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.conftest import require_real

pytestmark = [pytest.mark.real_service, pytest.mark.slow]

PLATFORM_IMAGE = "evalplatform:latest"
SERVICE_IMAGE = "evalplatform-execution-service:latest"
RUNTIME_IMAGE = "evalplatform/python:3.11"
ADMIN_PASSWORD = "topology-" + secrets.token_urlsafe(12)
SERVICE_SECRET = secrets.token_urlsafe(48)
LABEL = "evalplatform.test=topology"


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {completed.stderr.strip()}")
    return completed


@dataclass
class Platform:
    container: str
    url: str
    token: str

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Token {self.token}"}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)

    def logged_in(self) -> requests.Session:
        session = requests.Session()
        page = session.get(f"{self.url}/login/", timeout=10)
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert match, page.text[:500]
        response = session.post(
            f"{self.url}/login/",
            data={
                "username": "admin",
                "password": ADMIN_PASSWORD,
                "csrfmiddlewaretoken": match.group(1),
            },
            headers={"Referer": f"{self.url}/login/"},
            timeout=10,
        )
        assert response.ok and "/login/" not in response.url, response.text[:500]
        return session

    def logs(self) -> str:
        completed = docker("logs", "--tail", "60", self.container, check=False)
        return completed.stdout + completed.stderr


@pytest.fixture(scope="module")
def network() -> Iterator[str]:
    if shutil.which("docker") is None:
        require_real("Docker engine", "the docker command is not installed")
    if docker("info", check=False, timeout=30).returncode != 0:
        require_real("Docker engine", "the engine does not answer (scripts/start-dockerd.sh)")
    for image, how in (
        (PLATFORM_IMAGE, "make images"),
        (SERVICE_IMAGE, "make images"),
        (RUNTIME_IMAGE, "make runtime-image"),
    ):
        if docker("image", "inspect", image, check=False).returncode != 0:
            require_real(image, f"the image is not built ({how})")
    name = f"evaltopology-{uuid.uuid4().hex[:8]}"
    docker("network", "create", "--label", LABEL, name)
    try:
        yield name
    finally:
        ids = docker("ps", "-aq", "--filter", f"network={name}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        docker("network", "rm", name, check=False)


def address(container: str, network: str) -> str:
    template = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
    return docker("inspect", "-f", template, container).stdout.strip()


def start_platform(network: str, **environment: str) -> Platform:
    """Run the platform image (web, then a qcluster in the same container) with ``environment``
    on top of production settings, and return it once it answers with the admin's API token."""
    name = f"{network}-platform-{uuid.uuid4().hex[:6]}"
    env = {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "*",
        # The test speaks plain HTTP to the container; TLS would end at a proxy in front.
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        **environment,
    }
    flags = [item for key, value in env.items() for item in ("-e", f"{key}={value}")]
    docker(
        "run", "-d", "--name", name, "--network", network, "--label", LABEL, *flags, PLATFORM_IMAGE
    )
    url = f"http://{address(name, network)}:8000"
    deadline = time.monotonic() + 90
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            logs = docker("logs", "--tail", "40", name, check=False)
            raise AssertionError(f"the platform never answered: {logs.stdout}{logs.stderr}")
        time.sleep(0.5)
    docker("exec", name, "python", "manage.py", "bootstrap")
    docker("exec", "-d", name, "python", "manage.py", "qcluster")
    token = docker("exec", name, "python", "manage.py", "api_token", "create", "admin").stdout
    return Platform(container=name, url=url, token=token.strip())


def submit(platform: Platform, source: str, stdin: str) -> dict[str, Any]:
    """Submit through the API and wait for the run to end; the execution as JSON."""
    body = {"runtime": "python-3.11", "source": source, "stdin": stdin}
    response = platform.api("POST", "/api/v1/evaluations/?wait=30", json=body)
    assert response.status_code == 201, response.text
    evaluation = response.json()
    deadline = time.monotonic() + 60
    while evaluation["executions"][0]["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"never ended: {evaluation}\n{platform.logs()}"
        time.sleep(0.5)
        evaluation = platform.api("GET", f"/api/v1/evaluations/{evaluation['id']}/").json()
    return {"evaluation": evaluation["id"], **evaluation["executions"][0]}


def test_platform_container_without_socket_disables_execution_and_says_why(network: str) -> None:
    platform = start_platform(network)
    assert (
        docker(
            "exec", platform.container, "test", "-e", "/var/run/docker.sock", check=False
        ).returncode
        != 0
    )

    session = platform.logged_in()
    security = session.get(f"{platform.url}/security/", timeout=10).text
    assert "Code execution is disabled." in security
    assert "runs inside a container (/.dockerenv exists)" in security

    execution = submit(platform, "print('must not run')\n", "")
    # Refused by the disabled backend: no exit code, no output, nothing ran.
    assert execution["status"] == "refused"
    assert execution["backend"] == "disabled"
    assert execution["error_kind"] == "refused"
    assert "inside a container" in execution["error_message"]
    assert execution["exit_code"] is None
    assert execution["stdout"] in ("", None)

    page = session.get(f"{platform.url}/evaluations/{execution['evaluation']}/", timeout=10).text
    assert "Code execution is disabled." in page
    assert "inside a container" in page


def test_platform_runs_code_through_the_execution_service_container(network: str) -> None:
    service = f"{network}-execution-service"
    docker(
        "run", "-d", "--name", service, "--network", network, "--network-alias",
        "execution-service", "--label", LABEL,
        "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-e", f"EXECUTION_SERVICE_SECRET={SERVICE_SECRET}",
        SERVICE_IMAGE,
    )  # fmt: skip
    platform = start_platform(
        network,
        EXECUTION_BACKEND="remote",
        EXECUTION_REMOTE_URLS="http://execution-service:8700",
        EXECUTION_SERVICE_SECRET=SERVICE_SECRET,
        # A request that waits for its run outlives gunicorn's worker timeout; the image's
        # threaded workers keep answering (a sync worker would be killed mid-request).
        GUNICORN_CMD_ARGS="--timeout 2",
    )
    # The socket is mounted into the service only.
    assert (
        docker(
            "exec", platform.container, "test", "-e", "/var/run/docker.sock", check=False
        ).returncode
        != 0
    )
    assert (
        docker("exec", service, "test", "-S", "/var/run/docker.sock", check=False).returncode == 0
    )

    source = "import sys, time\ntime.sleep(4)\nprint(sys.stdin.read()[::-1])\n"
    response = platform.api(
        "POST",
        "/api/v1/evaluations/?wait=30",
        json={
            "runtime": "python-3.11",
            "source": source,
            "stdin": "topology",
            "time_limit_ms": 10000,
        },
    )
    assert response.status_code == 201, f"{response.text[:500]}\n{platform.logs()}"
    execution = response.json()["executions"][0]
    assert execution["status"] == "finished", f"{execution}\n{platform.logs()}"
    assert execution["stdout"] == "ygolopot\n"
    assert execution["exit_code"] == 0

    security = platform.logged_in().get(f"{platform.url}/security/", timeout=10).text
    assert "Code execution is disabled." not in security
    assert "Configured by EXECUTION_BACKEND." in security


def test_the_execution_service_image_holds_the_sandbox_layer_and_no_django(network: str) -> None:
    probe = (
        "import importlib.util as u, pathlib as p; "
        "print(sorted(n for n in ('django', 'rest_framework', 'kubernetes', 'docker') "
        "if u.find_spec(n)), sorted(x.name for x in p.Path('/app').iterdir()))"
    )
    listed = docker("run", "--rm", "--label", LABEL, SERVICE_IMAGE, "python", "-c", probe)
    assert listed.stdout.split("\n")[0] == "['docker'] ['execution_service', 'sandbox']"
    usage = docker(
        "run",
        "--rm",
        "--label",
        LABEL,
        SERVICE_IMAGE,
        "python",
        "-m",
        "execution_service",
        "--help",
    )
    assert "--max-wall-time-ms" in usage.stdout
