"""The models' own rules: what a runtime of the catalogue may hold."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from executions.models import Runtime

pytestmark = pytest.mark.django_db


def clean_errors(runtime: Runtime) -> dict[str, list[str]]:
    try:
        runtime.full_clean()
    except ValidationError as exc:
        return exc.message_dict
    return {}


def test_a_runtime_compiles_only_with_a_compile_command(runtime: Runtime) -> None:
    assert runtime.compile_command == [] and not runtime.compiles
    assert (runtime.compile_time_limit_ms, runtime.compile_memory_mb) == (10_000, 512)
    runtime.compile_command = ["gcc", "-o", "main", "main.c"]
    assert runtime.compiles and clean_errors(runtime) == {}


@pytest.mark.parametrize(
    "command",
    ["gcc main.c", ["gcc", ""], ["gcc", 3], [["gcc"]], {"argv": ["gcc"]}, ""],
)
def test_a_compile_command_that_is_not_a_list_of_strings_is_refused(
    runtime: Runtime, command: Any
) -> None:
    runtime.compile_command = command
    errors = clean_errors(runtime)
    assert list(errors) == ["compile_command"]
    assert "compile command must be a JSON list" in errors["compile_command"][0]


def test_an_emptied_compile_command_means_no_compile_step(runtime: Runtime) -> None:
    runtime.compile_command = None
    assert clean_errors(runtime) == {}
    assert runtime.compile_command == [] and not runtime.compiles


def test_compile_limits_are_bounded_by_the_hard_maximums(runtime: Runtime, settings: Any) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "HARD_MAX_WALL_TIME_MS": 30_000,
        "HARD_MAX_MEMORY_MB": 1024,
    }
    runtime.compile_time_limit_ms = 30_001
    runtime.compile_memory_mb = 1025
    errors = clean_errors(runtime)
    assert errors == {
        "compile_time_limit_ms": ["The platform's hard maximum is 30000."],
        "compile_memory_mb": ["The platform's hard maximum is 1024."],
    }
    runtime.compile_time_limit_ms, runtime.compile_memory_mb = 30_000, 1024
    assert clean_errors(runtime) == {}


def test_a_compile_limit_of_zero_is_refused(runtime: Runtime) -> None:
    runtime.compile_time_limit_ms = 0
    assert list(clean_errors(runtime)) == ["compile_time_limit_ms"]


def test_the_run_command_is_still_required(runtime: Runtime) -> None:
    runtime.command = []
    runtime.compile_command = ["gcc", "main.c"]
    assert list(clean_errors(runtime)) == ["command"]
