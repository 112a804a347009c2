"""Shared fixtures. Tests run against the real database configured by DATABASE_URL.

The Docker engine, the runtime image and the slot directory are here because both the Docker
runner's tests (``tests/sandbox``) and the platform's backend tests (``tests/backends``) use
them; session-scoped, each is set up once per run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django_q.conf import Conf

from executions import backends
from executions.backends.fake import FakeBackend
from executions.models import Runtime, UserQuota


def require_real(part: str, reason: str) -> NoReturn:
    """A test that needs a real outside part which is not there: skip locally, fail in CI."""
    message = f"{part} is not available: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must provide it)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _test_settings(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Production settings redirect to HTTPS; the test client speaks plain HTTP.
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    # Real hashing costs a second per test user; strength is not under test here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # One attempt per run unless a test asks for automatic re-runs (tests/services/
    # test_reaping.py, test_recovery.py): a failure under test stays the latest attempt.
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "fake", "AUTO_RERUNS": 0}
    # Tasks enqueued by tests go to a queue of their own, never to a real cluster's.
    monkeypatch.setattr(Conf, "PREFIX", "evalplatform-tests")
    monkeypatch.setattr(Conf, "CLUSTER_NAME", "evalplatform-tests")
    FakeBackend.reset()
    backends.reset()
    # Request counts live in the cache; a user id reused by a later test would otherwise
    # inherit an earlier test's requests and be throttled. Tests count in their own memory
    # (clearing a Redis cache would flush the database the task broker uses too);
    # tests/api/test_throttling_redis.py covers the Redis cache.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    caches["default"].clear()
    yield
    backends.reset()


@pytest.fixture
def bare_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine with no backend configured but the active one: no cluster configuration, no
    execution service, no Docker engine (DOCKER_HOST names a socket nobody listens on)."""
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    return tmp_path


@pytest.fixture
def orm_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks go to the embedded ORM broker, in the test's own database, whatever broker the
    suite runs on: a test that counts what the broker holds sees only its own tasks."""
    monkeypatch.setattr(Conf, "ORM", "default")
    monkeypatch.setattr(Conf, "REDIS", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", "executions.broker.ORMBroker")


@pytest.fixture
def user(db: None) -> User:
    return User.objects.create_user("ada", password="correct horse battery staple")


@pytest.fixture
def other_user(db: None) -> User:
    return User.objects.create_user("grace", password="correct horse battery staple")


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_superuser("root", password="correct horse battery staple")


@pytest.fixture
def roomy_quota(user: User) -> UserQuota:
    """Enough quota that tests submitting many evaluations are not refused by it."""
    return UserQuota.objects.create(user=user, max_concurrent=10_000, max_per_day=10_000)


@pytest.fixture
def runtime(db: None) -> Runtime:
    return Runtime.objects.create(
        name="python-3.11",
        display_name="Python 3.11",
        image="evalplatform/python:3.11",
        command=["python3", "main.py"],
        file_name="main.py",
    )


@pytest.fixture
def compiling_runtime(db: None) -> Runtime:
    """A runtime with a compile step (on the fake backend, nothing is compiled)."""
    return Runtime.objects.create(
        name="c-gcc",
        display_name="C (gcc)",
        language="c",
        image="evalplatform/c:gcc",
        compile_command=["gcc", "-O2", "-o", "main", "main.c"],
        command=["./main"],
        file_name="main.c",
        compile_time_limit_ms=7_000,
        compile_memory_mb=384,
        pids_limit=32,
    )


# --- a real Docker engine -----------------------------------------------------------------

RUNTIME_IMAGE = "evalplatform/python:3.11"


def _direct_engine_options() -> dict[str, Any]:
    return {"base_url": os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"}


@pytest.fixture(scope="session")
def require_docker() -> dict[str, Any]:
    """Options reaching the Docker engine directly; skip (fail in CI) if it does not answer."""
    try:
        from sandbox.docker import DockerBackend
    except ImportError as exc:
        require_real("The Docker SDK", str(exc))
    options = _direct_engine_options()
    health = DockerBackend(**options).health()
    if not health.ok:
        require_real("A Docker engine", f"{health.detail} (run scripts/start-dockerd.sh)")
    return options


@pytest.fixture(scope="session")
def runtime_image(require_docker: dict[str, Any]) -> str:
    """The Python runtime image, built once (offline when no registry answers) and reused."""
    from executions.runtime_images import RuntimeImageError, ensure_runtime_image
    from sandbox.docker import DockerBackend

    try:
        ensure_runtime_image(
            RUNTIME_IMAGE,
            mode=os.environ.get("EVALPLATFORM_IMAGE_BUILD", "auto"),
            backend=DockerBackend(**require_docker),
            log=lambda line: None,
        )
    except RuntimeImageError as exc:
        require_real(f"The runtime image {RUNTIME_IMAGE}", str(exc))
    return RUNTIME_IMAGE


@pytest.fixture(scope="session")
def tier_one_images(require_docker: dict[str, Any]) -> None:
    """The images of the runtime catalogue's tier 1, built once (seconds when current)."""
    from executions import catalogue
    from executions.runtime_images import RuntimeImageError, ensure_images
    from sandbox.docker import DockerBackend

    names = sorted({entry.image for entry in catalogue.ENTRIES if entry.tier == 1})
    try:
        ensure_images(
            names,
            mode=os.environ.get("EVALPLATFORM_IMAGE_BUILD", "auto"),
            backend=DockerBackend(**require_docker),
            log=lambda line: None,
        )
    except RuntimeImageError as exc:
        tags = ", ".join(catalogue.IMAGES[name].tag for name in names)
        require_real(f"The tier-1 runtime images ({tags})", str(exc))


@pytest.fixture(scope="session")
def slot_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Concurrency slots private to the test session (not shared with a live platform)."""
    return str(tmp_path_factory.mktemp("docker-slots"))


@pytest.fixture(scope="session")
def docker_api(require_docker: dict[str, Any]) -> Any:
    """A low-level Docker client for looking at what the backend left on the engine."""
    from sandbox.docker import DockerBackend

    return DockerBackend(**require_docker).api()


@pytest.fixture(scope="session")
def sandbox_gone(docker_api: Any) -> Callable[[str], bool]:
    """True when no container named ``handle`` and no new managed volume is left."""
    from sandbox.docker import MANAGED_FILTER

    def dangling_volumes() -> set[str]:
        found = docker_api.volumes(filters={"label": MANAGED_FILTER, "dangling": True})
        return {volume["Name"] for volume in (found.get("Volumes") or [])}

    before = dangling_volumes()

    def gone(handle: str) -> bool:
        named = docker_api.containers(all=True, filters={"name": f"^/{handle}$"})
        return not named and dangling_volumes() <= before

    return gone
