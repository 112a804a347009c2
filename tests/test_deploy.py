"""The production compose file: valid for docker-compose, and the Docker socket is mounted
into the execution service only, never into the platform."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_real

pytestmark = [pytest.mark.real_service]

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "deploy" / "docker-compose.yml"


def test_compose_is_valid_and_only_the_execution_service_holds_the_socket() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        require_real("docker-compose", "not installed (apt-get install docker-compose)")
    completed = subprocess.run(
        [tool, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    config = yaml.safe_load(completed.stdout)
    services = config["services"]
    holders = {
        name
        for name, service in services.items()
        if any("docker.sock" in str(volume) for volume in service.get("volumes", []))
    }
    assert holders == {"execution-service"}
    assert set(services["execution-service"]["networks"]) == {"execution"}
    assert config["networks"]["execution"]["internal"] is True
    for name in ("web", "qcluster"):
        assert services[name]["environment"]["EXECUTION_BACKEND"] == "remote"
        assert "execution-service" in services[name]["environment"]["EXECUTION_REMOTE_URLS"]
    dockerfile = (REPO / "Dockerfile").read_text()
    for service in services.values():
        if "build" in service:
            assert f" AS {service['build']['target']}\n" in dockerfile
