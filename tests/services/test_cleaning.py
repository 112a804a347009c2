"""Input cleaning through ``evaluation_submit``: every bad field named, nothing stored."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from executions import services
from executions.models import Runtime
from tests.services.conftest import nothing_stored, submit

pytestmark = pytest.mark.django_db


def test_submit_puts_the_main_file_first(user: Any, runtime: Runtime) -> None:
    files = [
        {"name": "helper.py", "content": "X = 1\n"},
        {"name": "main.py", "content": "import helper\n"},
    ]
    evaluation = services.evaluation_submit(user=user, runtime=runtime, files=files)
    assert [f["name"] for f in evaluation.files] == ["main.py", "helper.py"]


BIG = "x" * (64 * 1024 + 1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"runtime": "cobol-85"}, "runtime"),
        ({"runtime": None}, "runtime"),
        ({"source": ""}, "source"),
        ({"source": "   \n"}, "source"),
        ({"source": BIG}, "source"),
        ({"source": "print(1)\x00"}, "source"),
        ({"source": b"print('\xff')"}, "source"),
        ({"source": "print('\udcff')"}, "source"),
        ({"stdin": "a\x00b"}, "stdin"),
        ({"stdin": b"\xc3\x28"}, "stdin"),
        ({"stdin": "x" * (1024 * 1024 + 1)}, "stdin"),
        ({"time_limit_ms": 10_001}, "time_limit_ms"),
        ({"time_limit_ms": 0}, "time_limit_ms"),
        ({"time_limit_ms": "soon"}, "time_limit_ms"),
        ({"memory_mb": 513}, "memory_mb"),
        ({"output_kb": 4096}, "output_kb"),
        ({"test_cases": [{"stdin": "1"}] * 51}, "test_cases"),
        ({"test_cases": [{"comparison": "fuzzy"}]}, "test_cases[0].comparison"),
        ({"test_cases": [{"weight": 0}]}, "test_cases[0].weight"),
        ({"test_cases": [{"tolerance": -1}]}, "test_cases[0].tolerance"),
        ({"test_cases": [{"expected_output": "\x00"}]}, "test_cases[0].expected_output"),
        ({"test_cases": [{"colour": "red"}]}, "test_cases[0]"),
        ({"source": None, "files": []}, "files"),
        ({"source": None, "files": [{"name": "a.py", "content": "1"}] * 17}, "files"),
        ({"source": None, "files": [{"name": "../main.py", "content": "1"}]}, "files[0].name"),
        ({"source": None, "files": [{"name": "util.py", "content": "1"}]}, "files"),
        (
            {"source": None, "files": [{"name": "main.py", "content": "1"}] * 2},
            "files",
        ),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    user: Any, runtime: Runtime, kwargs: dict[str, Any], field: str
) -> None:
    kwargs.setdefault("runtime", runtime)
    kwargs.setdefault("source", "print(1)\n")
    with pytest.raises(ValidationError) as error:
        services.evaluation_submit(user=user, **kwargs)
    assert field in error.value.message_dict, error.value.message_dict
    assert nothing_stored()


def test_disabled_runtime_is_refused(user: Any, runtime: Runtime) -> None:
    runtime.enabled = False
    runtime.save()
    with pytest.raises(ValidationError) as error:
        submit(user, runtime)
    assert error.value.message_dict == {"runtime": ["Runtime 'python-3.11' is disabled."]}


def test_every_bad_field_is_reported_at_once(user: Any, runtime: Runtime) -> None:
    with pytest.raises(ValidationError) as error:
        submit(user, runtime, source="", stdin="\x00", memory_mb=100_000)
    assert set(error.value.message_dict) == {"source", "stdin", "memory_mb"}
