"""Finding the backend: by name or dotted path, chosen automatically, built from its options."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured

from evalplatform.variables import VARIABLES
from executions import backends
from executions.backends.disabled import DisabledBackend
from executions.backends.fake import FakeBackend
from executions.security import BACKEND_PROFILES
from sandbox.contract import ErrorKind
from tests.backends.runs import request


def test_configured_backend_wins(settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "fake"}
    selection = backends.select_backend()
    assert (selection.name, selection.configured) == ("fake", True)
    assert isinstance(backends.get_backend(), FakeBackend)


def test_inside_a_container_execution_is_disabled(settings: Any, monkeypatch: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": ""}
    monkeypatch.setattr("executions.environment.container_evidence", lambda: "/.dockerenv exists")
    selection = backends.select_backend()
    assert selection.name == "disabled" and not selection.configured
    assert "inside a container (/.dockerenv exists)" in selection.reason
    backend = backends.get_backend()
    assert isinstance(backend, DisabledBackend)
    result = backend.run(request())
    assert result.error_kind == ErrorKind.REFUSED
    assert "inside a container" in result.error_message
    assert (
        "root on the" in result.error_message
        and "the security page names it" in result.error_message
    )


def test_outside_a_container_without_backends_execution_is_disabled(
    settings: Any, monkeypatch: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": ""}
    monkeypatch.setattr("executions.environment.container_evidence", lambda: "")
    monkeypatch.setattr(backends, "AUTO_CANDIDATES", ("fake",))
    assert backends.select_backend().name == "fake", "the first working candidate is chosen"
    monkeypatch.setattr(backends, "AUTO_CANDIDATES", ())
    selection = backends.select_backend()
    assert selection.name == "disabled" and "No execution backend is available" in selection.reason


def test_unknown_backend_is_a_configuration_error(settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "teleport"}
    with pytest.raises(ImproperlyConfigured, match="teleport"):
        backends.get_backend()
    errors = [message for message in run_checks() if message.id == "executions.E001"]
    assert len(errors) == 1 and "teleport" in errors[0].msg


def test_remote_backend_without_urls_or_secret_is_a_configuration_error(settings: Any) -> None:
    options = {"urls": (), "secret": ""}
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "remote",
        "BACKEND_OPTIONS": {"remote": options},
    }
    errors = [message for message in run_checks() if message.id == "executions.E001"]
    assert len(errors) == 1 and "EXECUTION_REMOTE_URLS" in errors[0].msg
    options["urls"] = ("https://exec.internal",)
    backends.reset()
    errors = [message for message in run_checks() if message.id == "executions.E001"]
    assert len(errors) == 1 and "EXECUTION_SERVICE_SECRET" in errors[0].msg


@pytest.mark.parametrize(
    "path", ["executions.backends.nothere.Backend", "executions.models.Runtime"]
)
def test_bad_dotted_paths_are_configuration_errors(path: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="EXECUTION_BACKEND"):
        backends.backend_class(path)


def test_known_backend_passes_the_check(settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "disabled"}
    assert not [m for m in run_checks() if (m.id or "").startswith("executions.E")]


def test_each_backend_states_live_facts_and_its_trust_is_written_once_on_the_page() -> None:
    required = {"remote": {"urls": ("https://exec.internal",), "secret": "s" * 40}}
    profiles = {profile.key for profile in BACKEND_PROFILES}
    for name in backends.BACKENDS:
        facts = backends.backend_class(name)(**required.get(name, {})).describe().facts
        assert facts and all(isinstance(value, str) and value for value in facts.values())
        assert name == "fake" or name in profiles, f"{name} has no column on the security page"


# --- options from settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "key", "reason"),
    [
        ("docker", {"max_concurrent": 4}, "max_concurrent", "unknown option"),
        ("docker", {"max_concurrent_per_node": "many"}, "max_concurrent_per_node", "many"),
        ("kubernetes", {"watch_timeout_s": "soon"}, "watch_timeout_s", "soon"),
        ("remote", {"urls": ("https://exec.internal",), "poll_wait_s": "x"}, "poll_wait_s", "x"),
        ("disabled", {"colour": "red"}, "colour", "unknown option"),
        ("fake", {"colour": "red"}, "colour", "unknown option"),
    ],
)
def test_a_bad_option_in_settings_names_the_backend_and_the_key(
    settings: Any, name: str, options: dict[str, Any], key: str, reason: str
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND_OPTIONS": {name: options}}
    with pytest.raises(ImproperlyConfigured) as caught:
        backends.get_backend(name)
    message = str(caught.value)
    assert f"['{name}']['{key}']" in message and reason in message


def test_the_option_names_settings_can_set_are_the_ones_the_backends_declare() -> None:
    by_backend: dict[str, set[str]] = {}
    for variable in VARIABLES:
        if variable.backend:
            by_backend.setdefault(variable.backend, set()).add(variable.key)
    assert set(by_backend) == {"docker", "remote", "kubernetes"}
    for name, keys in by_backend.items():
        declared = {field.name for field in fields(backends.backend_class(name).options_class)}
        assert keys <= declared, (name, keys - declared)


@pytest.mark.parametrize("name", sorted(backends.BACKENDS))
def test_every_backend_checks_the_request_before_it_reaches_its_engine(
    name: str, monkeypatch: Any, tmp_path: Path
) -> None:
    """Through the template run: nothing is contacted (no engine, cluster or service listens
    here) for a request that no backend may run."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    required: dict[str, dict[str, Any]] = {
        "remote": {"urls": ("http://127.0.0.1:9",), "secret": "s" * 40},
        "kubernetes": {"kubeconfig": str(tmp_path / "missing")},
    }
    backend = backends.backend_class(name)(**required.get(name, {}))
    unsafe = backend.run(request(files={"main.py": b"1", "../escape.py": b"x"}))
    assert unsafe.error_kind == ErrorKind.BACKEND_ERROR
    assert "unsafe file name" in unsafe.error_message
    no_command = backend.run(replace(request(), command=()))
    assert (no_command.error_kind, no_command.error_message) == (
        ErrorKind.BACKEND_ERROR,
        "The runtime has no command.",
    )
