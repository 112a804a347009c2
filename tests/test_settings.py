"""Settings come from the environment, and bad values are named errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from evalplatform.env import database_from_url, env, envbool, envint, envlist, load_env_file
from evalplatform.variables import VARIABLES, executions_from_environment
from executions.checks import check_backend
from executions.conf import DEFAULTS, execution_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("raw", "value"), [("1", True), ("yes", True), ("off", False), ("", False)]
)
def test_envbool(monkeypatch: pytest.MonkeyPatch, raw: str, value: bool) -> None:
    monkeypatch.setenv("FLAG", raw)
    assert envbool("FLAG", not value) is value


def test_envbool_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG must be a boolean"):
        envbool("DEBUG", False)


def test_envint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("Q_WORKERS", "four")
    with pytest.raises(ImproperlyConfigured, match="Q_WORKERS must be an integer"):
        envint("Q_WORKERS", 2)
    monkeypatch.setenv("Q_WORKERS", "0")
    with pytest.raises(ImproperlyConfigured, match="Q_WORKERS must be at least 1"):
        envint("Q_WORKERS", 2, minimum=1)
    monkeypatch.setenv("Q_WORKERS", "3")
    assert envint("Q_WORKERS", 2) == 3


def test_envlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", "a.example, b.example,,")
    assert envlist("ALLOWED_HOSTS", []) == ["a.example", "b.example"]


def test_secret_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    assert env("SECRET_KEY") == "s3cr3t"
    monkeypatch.setenv("SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY_FILE"):
        env("SECRET_KEY")


def test_database_urls() -> None:
    postgres = database_from_url(
        "DATABASE_URL", "postgres://u:p%40ss@db.internal:6543/evals?sslmode=require"
    )
    assert postgres["ENGINE"] == "django.db.backends.postgresql"
    assert (postgres["NAME"], postgres["USER"], postgres["PASSWORD"]) == ("evals", "u", "p@ss")
    assert (postgres["HOST"], postgres["PORT"], postgres["OPTIONS"]) == (
        "db.internal",
        "6543",
        {"sslmode": "require", "connect_timeout": "5"},
    )
    patient = database_from_url("DATABASE_URL", "postgres://db.internal/evals?connect_timeout=30")
    assert patient["OPTIONS"] == {"connect_timeout": "30"}
    assert (
        database_from_url("DATABASE_URL", "sqlite:////srv/db.sqlite3")["NAME"] == "/srv/db.sqlite3"
    )
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL must start with"):
        database_from_url("DATABASE_URL", "mysql://x/y")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL must name a database"):
        database_from_url("DATABASE_URL", "postgres://host/")


def load_settings(**environ: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if key not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('loaded')"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "evalplatform.settings", **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_env_file_fills_only_what_the_environment_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "local.env"
    assert load_env_file(path) == [], "a missing file is no error"
    path.write_text("# made by make run\n\nEVALTEST_A=1\n EVALTEST_B = two words \n")
    monkeypatch.setenv("EVALTEST_B", "from the environment")
    monkeypatch.delenv("EVALTEST_A", raising=False)
    assert load_env_file(path) == ["EVALTEST_A"]
    assert os.environ["EVALTEST_A"] == "1"
    assert os.environ["EVALTEST_B"] == "from the environment"
    monkeypatch.delenv("EVALTEST_A")
    path.write_text("EVALTEST_A=1\nexport EVALTEST_C\n")
    with pytest.raises(ImproperlyConfigured, match=r"local.env, line 2: expected NAME=value"):
        load_env_file(path)


def test_a_checkout_where_make_run_ran_needs_no_debug_in_the_environment(tmp_path: Path) -> None:
    (tmp_path / "local.env").write_text("DEBUG=1\n")
    result = load_settings(VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    # The environment still wins: production settings refuse the missing secret.
    result = load_settings(VAR_DIR=str(tmp_path), DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set" in result.stderr


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = load_settings(DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set" in result.stderr


def test_production_refuses_the_development_key() -> None:
    result = load_settings(DEBUG="0", SECRET_KEY="insecure-development-key-never-use-in-production")
    assert result.returncode != 0 and "development default" in result.stderr


def test_production_starts_with_a_real_key() -> None:
    result = load_settings(DEBUG="0", SECRET_KEY="k" * 50)
    assert result.returncode == 0, result.stderr
    assert "loaded" in result.stdout


def test_a_short_metrics_token_is_refused_naming_the_variable(tmp_path: Path) -> None:
    result = load_settings(DEBUG="1", METRICS_TOKEN="short")
    assert result.returncode != 0
    assert "METRICS_TOKEN (or METRICS_TOKEN_FILE) must be at least 32 characters" in result.stderr
    token = tmp_path / "metrics-token"
    token.write_text("t" * 40 + "\n")
    result = load_settings(DEBUG="1", METRICS_TOKEN_FILE=str(token))
    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_in_production_settings(tmp_path: Path) -> None:
    environ = {
        key: value for key, value in os.environ.items() if key not in {"SECRET_KEY", "DEBUG"}
    }
    environ.update(
        DJANGO_SETTINGS_MODULE="evalplatform.settings",
        DEBUG="0",
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        ALLOWED_HOSTS="evals.example.org",
        EXECUTION_BACKEND="disabled",
        VAR_DIR=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_health_check_answers_any_host_over_http(client: Any, settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["evals.example.org"]
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert (response.status_code, response.content) == (200, b"ok")
    assert client.get("/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400


@pytest.mark.parametrize(
    ("redis_url", "backend"),
    [
        ("redis://broker.internal:6379/0", "django.core.cache.backends.redis.RedisCache"),
        ("", "django.core.cache.backends.locmem.LocMemCache"),
    ],
)
def test_rate_counts_are_kept_in_redis_when_there_is_one(redis_url: str, backend: str) -> None:
    """Throttles count in the default cache: Redis shares the counts between web processes."""
    clean = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    code = "import django; django.setup(); from django.conf import settings; " + (
        "print(settings.CACHES['default']['BACKEND'], settings.CACHES['default'].get('LOCATION'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "evalplatform.settings",
            "DEBUG": "1",
            "REDIS_URL": redis_url,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found_backend, location = result.stdout.split()
    assert found_backend == backend
    if redis_url:
        assert location == redis_url


@pytest.fixture
def no_execution_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in VARIABLES:
        monkeypatch.delenv(variable.name, raising=False)
        monkeypatch.delenv(f"{variable.name}_FILE", raising=False)
    return monkeypatch


def test_each_variable_sets_a_key_that_has_a_default_or_a_hashable_backend_option() -> None:
    names = [variable.name for variable in VARIABLES]
    assert len(names) == len(set(names))
    for variable in VARIABLES:
        if variable.backend:
            assert variable.kind in (str, int, tuple), f"{variable.name}: options are hashable"
        else:
            assert variable.key in DEFAULTS, variable.name
            assert isinstance(DEFAULTS[variable.key], variable.kind), variable.name
            assert not variable.empty, f"{variable.name}: its default is conf's"


def test_without_variables_executions_holds_nothing_and_conf_gives_every_default(
    no_execution_variables: pytest.MonkeyPatch, settings: Any
) -> None:
    assert executions_from_environment() == {}
    settings.EXECUTIONS = {}
    assert execution_settings.WEBHOOK_MAX_ATTEMPTS == DEFAULTS["WEBHOOK_MAX_ATTEMPTS"] == 5
    assert execution_settings.BACKEND_OPTIONS == {}


def test_set_variables_become_typed_keys_and_backend_options(
    no_execution_variables: pytest.MonkeyPatch,
) -> None:
    environ = {
        "EXECUTION_BACKEND": "kubernetes",
        "EXECUTION_MAX_FILES": "3",
        "EXECUTION_WEBHOOK_ALLOWLIST": "10.0.0.0/8, hooks.internal,",
        "EXECUTION_REMOTE_URLS": "https://exec1.internal,https://exec2.internal",
        "EXECUTION_DOCKER_MAX_CONCURRENT": "2",
        "EXECUTION_KUBERNETES_TTL_S": "0",
        "EXECUTION_KUBERNETES_IMAGE_PULL_SECRETS": "registry",
        # Unset and empty are the same: the default stands.
        "EXECUTION_MAX_TEST_CASES": "",
        "EXECUTION_KUBERNETES_NAMESPACE": "",
    }
    for name, value in environ.items():
        no_execution_variables.setenv(name, value)
    assert executions_from_environment() == {
        "BACKEND": "kubernetes",
        "MAX_FILES": 3,
        "WEBHOOK_ALLOWLIST": ["10.0.0.0/8", "hooks.internal"],
        "BACKEND_OPTIONS": {
            "docker": {"max_concurrent_per_node": 2},
            "remote": {"urls": ("https://exec1.internal", "https://exec2.internal")},
            "kubernetes": {"ttl_seconds_after_finished": 0, "image_pull_secrets": ("registry",)},
        },
    }


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EXECUTION_MAX_FILES", "0", "EXECUTION_MAX_FILES must be at least 1, got 0"),
        ("EXECUTION_HARD_MAX_WALL_TIME_MS", "soon", "EXECUTION_HARD_MAX_WALL_TIME_MS must be an"),
        ("EXECUTION_API_MAX_BODY_BYTES", "1023", "EXECUTION_API_MAX_BODY_BYTES must be at least"),
        ("EXECUTION_DOCKER_MAX_CONCURRENT", "0", "EXECUTION_DOCKER_MAX_CONCURRENT must be at"),
        ("EXECUTION_KUBERNETES_TTL_S", "-1", "EXECUTION_KUBERNETES_TTL_S must be at least 0"),
    ],
)
def test_a_malformed_variable_is_named(
    no_execution_variables: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    no_execution_variables.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=message):
        executions_from_environment()


def settings_values(**environ: str) -> subprocess.CompletedProcess[str]:
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("EXECUTION_") and key != "DEBUG"
    }
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.EXECUTIONS, settings.Q_CLUSTER['timeout'])"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "evalplatform.settings", "DEBUG": "1", **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_settings_hold_only_what_the_environment_sets() -> None:
    result = settings_values()
    assert result.returncode == 0, result.stderr
    # The task timeout reads conf's defaults: (60 s + 10) for a compile step and each of 50
    # cases, plus one.
    assert result.stdout.split() == ["{}", str((60 + 10) * 52)]
    result = settings_values(EXECUTION_HARD_MAX_WALL_TIME_MS="5000", EXECUTION_MAX_TEST_CASES="2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rsplit(maxsplit=1)[1] == str((5 + 10) * 4)
    result = settings_values(EXECUTION_MAX_TEST_CASES="many")
    assert result.returncode != 0
    assert "EXECUTION_MAX_TEST_CASES must be an integer" in result.stderr


def test_the_backend_check_reads_absent_options_as_defaults(settings: Any) -> None:
    settings.EXECUTIONS = {}
    assert check_backend() == []
    settings.EXECUTIONS = {"BACKEND": "remote"}
    (error,) = check_backend()
    assert error.id == "executions.E001" and "EXECUTION_REMOTE_URLS" in error.msg
