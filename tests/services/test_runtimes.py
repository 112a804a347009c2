"""Seeding the catalogue's runtimes, and self-testing them on the real Docker engine."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from executions import catalogue, selectors, services
from executions.catalogue import ENTRY_BY_NAME
from executions.models import Runtime, SelfTestStatus
from sandbox.contract import ErrorKind, ExecutionBackend, Isolation, RunRequest, RunResult

pytestmark = pytest.mark.django_db

PYTHON = ENTRY_BY_NAME["python-3.11"]
TIER_ONE = [entry for entry in catalogue.ENTRIES if entry.tier == 1]


def test_sync_creates_then_changes_nothing() -> None:
    first = services.runtimes_sync(TIER_ONE)
    assert {outcome.action for outcome in first} == {"created"}
    again = services.runtimes_sync(TIER_ONE)
    assert {outcome.action for outcome in again} == {"unchanged"}
    cpp = Runtime.objects.get(name="cpp20-gcc12")
    assert cpp.language == "C++" and cpp.version == "C++20, GCC 12"
    assert cpp.compile_command[:2] == ["g++", "-std=c++20"] and cpp.editor_mode == "text/x-c++src"
    assert (
        cpp.image == "evalplatform/gcc:12" and cpp.hello_world == ENTRY_BY_NAME["cpp20-gcc12"].hello
    )


def test_sync_keeps_the_admin_s_limits_and_stales_the_self_test_when_the_runtime_changes() -> None:
    services.runtimes_sync([PYTHON])
    Runtime.objects.filter(name=PYTHON.name).update(
        max_time_limit_ms=42_000, self_test_status=SelfTestStatus.PASSED, enabled=False
    )
    changed = dataclasses.replace(PYTHON, command=("python3", "-I", "main.py"))
    (outcome,) = services.runtimes_sync([changed])
    runtime = Runtime.objects.get(name=PYTHON.name)
    assert outcome.action == "updated"
    assert runtime.command == ["python3", "-I", "main.py"]
    assert runtime.max_time_limit_ms == 42_000 and runtime.enabled is False
    assert runtime.self_test_status == SelfTestStatus.UNTESTED


@pytest.fixture
def on_docker(settings: Any, require_docker: dict[str, Any], slot_dir: str) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "docker",
        "BACKEND_OPTIONS": {"docker": {**require_docker, "lock_dir": slot_dir}},
    }


@pytest.mark.real_service
@pytest.mark.parametrize("entry", TIER_ONE, ids=lambda entry: entry.name)
def test_tier_one_passes_its_self_test_and_says_hello(
    entry: catalogue.Entry, on_docker: None, tier_one_images: None
) -> None:
    (outcome,) = services.runtimes_sync([entry])
    result = services.runtime_self_test(outcome.runtime, entry)
    assert result.passed, result.detail
    assert (result.compile_ms is not None) == bool(entry.compile_command)
    runtime = Runtime.objects.get(name=entry.name)
    assert runtime.self_test_status == SelfTestStatus.PASSED and runtime.self_tested_at
    greeted, _seconds, detail = services.runtime_hello(runtime, entry)
    assert greeted, detail


@pytest.mark.real_service
def test_a_runtime_that_fails_its_self_test_is_not_offered(
    on_docker: None, tier_one_images: None
) -> None:
    wrong = dataclasses.replace(PYTHON, self_test="print(41)\n")
    (outcome,) = services.runtimes_sync([wrong])
    result = services.runtime_self_test(outcome.runtime, wrong)
    assert not result.passed and result.detail == "Expected '42', got '41'."
    assert not selectors.runtimes_enabled().filter(name=PYTHON.name).exists()
    assert selectors.runtimes_listed().filter(name=PYTHON.name).exists()


@pytest.mark.real_service
def test_a_compile_error_fails_the_self_test_with_the_compiler_s_words(
    on_docker: None, tier_one_images: None
) -> None:
    broken = dataclasses.replace(ENTRY_BY_NAME["c-gcc12"], self_test="int main( {\n")
    (outcome,) = services.runtimes_sync([broken])
    result = services.runtime_self_test(outcome.runtime, broken)
    assert not result.passed
    assert result.detail.startswith("The compile step failed (exit status 1)")
    assert "main.c" in result.detail and "error" in result.detail


def test_a_self_test_where_execution_is_disabled_concludes_nothing(settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "disabled"}
    (outcome,) = services.runtimes_sync([PYTHON])
    Runtime.objects.filter(name=PYTHON.name).update(self_test_status=SelfTestStatus.PASSED)
    result = services.runtime_self_test(outcome.runtime, PYTHON)
    assert not result.passed and not result.concluded
    assert Runtime.objects.get(name=PYTHON.name).self_test_status == SelfTestStatus.PASSED


class UnreachableBackend(ExecutionBackend):
    """An engine that cannot be reached: what a self-test must not hold against a runtime."""

    name = "unreachable"

    def run(self, request: RunRequest) -> RunResult:
        return RunResult.failure(ErrorKind.UNAVAILABLE, "engine down", handle=request.handle)

    def describe(self) -> Isolation:
        return Isolation()


def test_a_self_test_that_could_not_reach_its_backend_concludes_nothing(settings: Any) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.services.test_runtimes.UnreachableBackend",
    }
    (outcome,) = services.runtimes_sync([PYTHON])
    result = services.runtime_self_test(outcome.runtime, PYTHON)
    assert not result.passed and not result.concluded and "engine down" in result.detail
    assert Runtime.objects.get(name=PYTHON.name).self_test_status == SelfTestStatus.UNTESTED


def test_the_command_seeds_by_tier_and_refuses_unknown_names() -> None:
    out = io.StringIO()
    call_command("runtimes", "--tier", "1", stdout=out)
    assert set(Runtime.objects.values_list("name", flat=True)) == {e.name for e in TIER_ONE}
    call_command("runtimes", "--all", "--list", stdout=out)
    assert "sml-polyml5.7" in out.getvalue()
    with pytest.raises(CommandError, match="Not in the catalogue: cobol-85"):
        call_command("runtimes", "cobol-85")
