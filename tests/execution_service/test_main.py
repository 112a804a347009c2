"""``python -m execution_service``'s command line: caps and slots from arguments or the
environment, and a refusal to start without a secret."""

from __future__ import annotations

import dataclasses

import pytest

from execution_service import __main__ as cli
from sandbox import budget, wire
from sandbox.policy import Limits


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [
        "EXECUTION_SERVICE_HOST",
        "EXECUTION_SERVICE_PORT",
        "EXECUTION_SERVICE_MAX_CONCURRENT",
        "EXECUTION_SERVICE_SECRET",
        "EXECUTION_SERVICE_SECRET_FILE",
        "EXECUTION_SERVICE_MAX_CASES",
        "EXECUTION_SERVICE_MAX_STDIN_BYTES",
        *(f"EXECUTION_SERVICE_MAX_{name.upper()}" for name, _, _ in cli.CAPS),
    ]:
        monkeypatch.delenv(name, raising=False)


def test_every_limit_has_a_cap() -> None:
    """``main`` builds the caps from this table; a limit missing from it would be capped
    at the policy's default instead of by the operator."""
    assert [name for name, _, _ in cli.CAPS] == list(wire.LIMIT_FIELDS)
    # An optional limit (None: derived from the others) is capped like its type.
    types = {
        field.name: str(field.type).removesuffix(" | None") for field in dataclasses.fields(Limits)
    }
    assert {name: kind.__name__ for name, kind, _ in cli.CAPS} == types


def test_the_defaults_listen_on_loopback_with_the_tables_caps() -> None:
    args = cli.parse_args([])
    assert (args.host, args.port, args.max_concurrent_per_service) == ("127.0.0.1", 8700, 4)
    for name, kind, default in cli.CAPS:
        value = getattr(args, f"max_{name}")
        assert value == default and type(value) is kind, name


def test_the_environment_sets_each_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    for index, (name, kind, _) in enumerate(cli.CAPS):
        monkeypatch.setenv(f"EXECUTION_SERVICE_MAX_{name.upper()}", str(kind(index + 11)))
    monkeypatch.setenv("EXECUTION_SERVICE_MAX_CONCURRENT", "9")
    monkeypatch.setenv("EXECUTION_SERVICE_HOST", "10.0.0.5")
    monkeypatch.setenv("EXECUTION_SERVICE_PORT", "9100")
    args = cli.parse_args([])
    for index, (name, kind, _) in enumerate(cli.CAPS):
        value = getattr(args, f"max_{name}")
        assert value == index + 11 and type(value) is kind, name
    assert (args.host, args.port, args.max_concurrent_per_service) == ("10.0.0.5", 9100, 9)


def test_a_session_has_at_most_100_cases_and_8_mib_of_stdin_unless_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = cli.parse_args([])
    assert (args.max_cases, args.max_stdin_bytes) == (100, 8 * 1024 * 1024)
    monkeypatch.setenv("EXECUTION_SERVICE_MAX_CASES", "20")
    monkeypatch.setenv("EXECUTION_SERVICE_MAX_STDIN_BYTES", "4096")
    args = cli.parse_args([])
    assert (args.max_cases, args.max_stdin_bytes) == (20, 4096)
    args = cli.parse_args(["--max-cases", "5", "--max-stdin-bytes", "10"])
    assert (args.max_cases, args.max_stdin_bytes) == (5, 10)


def test_the_janitor_spares_the_longest_session_the_caps_allow() -> None:
    from sandbox.docker import DockerBackend

    backend = DockerBackend(lock_dir="/nonexistent-slots")
    args = cli.parse_args(["--max-cases", "10", "--max-wall-time-ms", "2000"])
    # The compile step and ten cases, each as long as a run at the cap, after a slot wait.
    assert cli.orphan_age_s(args, backend) == (
        11 * budget.run_s(2.0) + backend.slot_wait_s + budget.SERVICE_ORPHAN_GRACE_S
    )
    assert cli.orphan_age_s(cli.parse_args(["--orphan-age-s", "90"]), backend) == 90


def test_an_argument_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTION_SERVICE_MAX_MEMORY_MB", "1024")
    monkeypatch.setenv("EXECUTION_SERVICE_MAX_CPUS", "3.5")
    monkeypatch.setenv("EXECUTION_SERVICE_MAX_CONCURRENT", "9")
    args = cli.parse_args(["--max-memory-mb", "128", "--max-concurrent", "2"])
    assert (args.max_memory_mb, args.max_cpus, args.max_concurrent_per_service) == (128, 3.5, 2)


def test_a_cap_of_the_wrong_type_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parse_args(["--max-pids", "1.5"])
    assert exited.value.code == 2
    assert "--max-pids: invalid int value: '1.5'" in capsys.readouterr().err


def test_without_a_secret_the_service_does_not_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "must hold a shared secret of at least 32 characters" in capsys.readouterr().err


def test_a_malformed_variable_is_a_usage_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXECUTION_SERVICE_MAX_MEMORY_MB", "lots")
    with pytest.raises(SystemExit) as exited:
        cli.parse_args([])
    assert exited.value.code == 2
    assert "--max-memory-mb: invalid int value: 'lots'" in capsys.readouterr().err
