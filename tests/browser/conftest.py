"""Browser tests: Playwright driving Debian's Chromium against a live server, with a real
``qcluster`` behind it. Screenshots land in ``artifacts/screenshots``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from executions.models import Runtime
from tests.cluster import ClusterFactory, clusters
from tests.conftest import require_real

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Without these, Chromium reaches for Google's services and the sandbox needs a user namespace.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. While Playwright's synchronous API is active an event
    loop is running on this thread, which makes Django refuse ORM calls unless told they are
    safe (they are: the tests' ORM calls are synchronous). Both end with the module."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        require_real("Chromium", f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        require_real("Playwright", str(exc))
    with pytest.MonkeyPatch.context() as environ, sync_playwright() as playwright:
        environ.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


@pytest.fixture
def docker_platform(
    runtime: Runtime,
    runtime_image: str,
    require_docker: dict[str, Any],
    slot_dir: str,
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Runtime]:
    """The live server submits to the Docker backend and a real cluster runs the programs."""
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "docker",
        "BACKEND_OPTIONS": {"docker": {**require_docker, "lock_dir": slot_dir}},
    }
    runtime.image = runtime_image
    runtime.save()
    environ = {"EXECUTION_BACKEND": "docker"}
    if "base_url" in require_docker:
        environ["DOCKER_HOST"] = require_docker["base_url"]
    with clusters(tmp_path, settings, monkeypatch, **environ) as start:
        start()
        yield runtime


@pytest.fixture
def cluster_factory(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClusterFactory]:
    with clusters(tmp_path, settings, monkeypatch, EXECUTION_BACKEND="fake") as start:
        yield start
