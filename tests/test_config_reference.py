"""docs/configuration.md names every variable, with the default the code has.

The execution variables' tables are generated from ``evalplatform.variables.VARIABLES``;
Django's and the deployment's variables are written by hand, and each is one that
``evalplatform/settings.py`` reads or one listed in ``READ_ELSEWHERE``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from evalplatform import config_reference
from evalplatform.variables import VARIABLES
from executions.backends import backend_class
from executions.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "configuration.md"
# Documented variables that neither the settings module nor the table reads, and who does.
READ_ELSEWHERE = {
    "DOCKER_HOST": "sandbox/docker/runner.py",
    "ADMIN_USERNAME": "executions/management/commands/bootstrap.py",
    "ADMIN_PASSWORD": "executions/management/commands/bootstrap.py",
}


def documented() -> dict[str, str]:
    """Each variable in the document's tables, with the default its row states."""
    rows: dict[str, str] = {}
    for names, default in re.findall(
        r"^\| (`[A-Z][^|]*`) \| ([^|]*) \|", DOCUMENT.read_text(), re.M
    ):
        found = re.findall(r"`([A-Z][A-Z0-9_]*)`", names)
        defaults = [part.strip() for part in default.split(" / ")]
        for index, name in enumerate(found):
            rows[name] = defaults[index] if len(defaults) == len(found) else default.strip()
    return rows


def read_by_settings() -> set[str]:
    source = (ROOT / "evalplatform" / "settings.py").read_text()
    return set(re.findall(r"\benv\w*\(\s*\"([A-Z][A-Z0-9_]*)\"", source))


def test_the_generated_tables_are_current() -> None:
    text = DOCUMENT.read_text()
    assert config_reference.render(text) == text, (
        "docs/configuration.md is out of date: run python -m evalplatform.config_reference"
    )
    assert config_reference.main(["--check"]) == 0


def test_each_execution_variable_is_documented_with_the_default_of_conf() -> None:
    rows = documented()
    for variable in VARIABLES:
        assert variable.name in rows, f"{variable.name} is not in docs/configuration.md"
        if variable.backend:
            continue  # the next test: the backend holds the default
        value = DEFAULTS[variable.key]
        assert rows[variable.name] == (str(value) if value else "empty"), variable.name


def test_each_backend_option_is_documented_with_the_default_its_backend_declares() -> None:
    rows = documented()
    for variable in VARIABLES:
        if not variable.backend:
            continue
        options = backend_class(variable.backend).options_class
        field = {field.name: field for field in dataclasses.fields(options)}[variable.key]
        value: object = field.default
        if field.default is dataclasses.MISSING:
            value = field.default_factory()  # type: ignore[misc]
        stated = rows[variable.name].strip("`")
        if value in ("", (), {}):
            assert stated == (variable.empty or "empty"), variable.name
        else:
            assert stated == str(value), variable.name


def test_every_documented_variable_is_read_and_every_read_variable_is_documented() -> None:
    in_table = {variable.name for variable in VARIABLES}
    settings_reads = read_by_settings()
    assert {"DEBUG", "SECRET_KEY", "DATABASE_URL", "Q_WORKERS"} <= settings_reads
    assert not in_table & settings_reads, "a variable is read twice"
    rows = set(documented())
    assert rows - in_table - settings_reads == set(READ_ELSEWHERE)
    assert in_table | settings_reads <= rows
    for name, path in READ_ELSEWHERE.items():
        assert name in (ROOT / path).read_text(), f"{path} does not read {name}"


def test_a_stale_table_is_rewritten_and_a_missing_one_is_an_error() -> None:
    text = DOCUMENT.read_text()
    stale = text.replace("| `EXECUTION_MAX_FILES` | 16 |", "| `EXECUTION_MAX_FILES` | 17 |")
    assert stale != text
    assert config_reference.render(stale) == text
    without = text.replace(config_reference.BEGIN.format(name="kubernetes"), "")
    with pytest.raises(ValueError, match="kubernetes"):
        config_reference.render(without)
