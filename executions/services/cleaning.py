"""Input cleaning for submissions: each field checked, every bad one named at once.

The helpers here collect messages in an ``_Errors`` keyed by field path (``files[0].name``,
``test_cases[2].weight``) and return what they cleaned; the submission services raise them
together as one ``ValidationError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from executions import webhooks
from executions.conf import execution_settings
from executions.models import Comparison, Runtime

FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
MAX_WEIGHT = 1000


@dataclass(frozen=True)
class TestCaseInput:
    stdin: str = ""
    expected_output: str = ""
    comparison: str = Comparison.TRAILING_WHITESPACE
    tolerance: float = 1e-6
    weight: int = 1
    hidden: bool = False
    name: str = ""


@dataclass
class _Errors:
    """Validation messages keyed by field path, raised together as one ValidationError."""

    messages: dict[str, list[str]] = field(default_factory=dict)

    def add(self, path: str, message: str) -> None:
        self.messages.setdefault(path, []).append(message)

    def raise_if_any(self) -> None:
        if self.messages:
            raise ValidationError(self.messages)


def _clean_text(value: object, path: str, max_bytes: int, errors: _Errors) -> str:
    """Text that is valid UTF-8, has no NUL byte and fits in ``max_bytes``."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            errors.add(path, "Must be valid UTF-8 text.")
            return ""
    if not isinstance(value, str):
        errors.add(path, "Must be text.")
        return ""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        # Lone surrogates: what undecodable bytes turn into with surrogateescape.
        errors.add(path, "Must be valid UTF-8 text.")
        return ""
    if "\x00" in value:
        errors.add(path, "Must not contain NUL bytes.")
    if size > max_bytes:
        errors.add(path, f"Is {size} bytes; the maximum is {max_bytes}.")
    return value


def _clean_limit(
    value: object, path: str, default: int, minimum: int, maximum: int, errors: _Errors
) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        errors.add(path, "Must be a whole number.")
        return default
    try:
        number = int(value)
    except ValueError:
        errors.add(path, "Must be a whole number.")
        return default
    if number < minimum:
        errors.add(path, f"Must be at least {minimum}.")
    elif number > maximum:
        errors.add(path, f"Must be at most {maximum}, this runtime's cap.")
    return number


def _resolve_runtime(runtime: Runtime | str | None, errors: _Errors) -> Runtime | None:
    if isinstance(runtime, Runtime):
        runtime = runtime.name
    if not runtime:
        errors.add("runtime", "Choose a runtime.")
        return None
    found = Runtime.objects.filter(name=runtime).first()
    if found is None:
        errors.add("runtime", f"Unknown runtime {runtime!r}.")
    elif not found.enabled:
        errors.add("runtime", f"Runtime {runtime!r} is disabled.")
        return None
    elif not found.offered:
        errors.add(
            "runtime",
            f"Runtime {runtime!r} failed its self-test and is not offered: "
            f"{found.self_test_detail[:200]}",
        )
        return None
    return found


def _clean_files(
    files: Sequence[Mapping[str, Any]] | None,
    source: str | bytes | None,
    runtime: Runtime | None,
    errors: _Errors,
) -> list[dict[str, str]]:
    main_name = runtime.file_name if runtime else "main"
    from_source = files is None and source is not None
    if files is None:
        files = [] if source is None else [{"name": main_name, "content": source}]
    elif source is not None:
        errors.add("source", "Give either source or files, not both.")
    if not files:
        errors.add("files", "Submit at least one source file.")
        return []
    if len(files) > execution_settings.MAX_FILES:
        errors.add("files", f"At most {execution_settings.MAX_FILES} files are allowed.")
        return []
    cleaned: list[dict[str, str]] = []
    total = 0
    for index, item in enumerate(files):
        path = f"files[{index}]"
        if not isinstance(item, Mapping):
            errors.add(path, "Must be an object with a name and content.")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not FILE_NAME.fullmatch(name) or name in {".", ".."}:
            errors.add(f"{path}.name", "Must be a plain file name (letters, digits, _ . -).")
            name = ""
        content = _clean_text(
            item.get("content", ""),
            "source" if from_source else f"{path}.content",
            execution_settings.MAX_SOURCE_BYTES,
            errors,
        )
        total += len(content.encode("utf-8", errors="surrogatepass"))
        cleaned.append({"name": name, "content": content})
    names = [item["name"] for item in cleaned if item["name"]]
    if len(set(names)) != len(names):
        errors.add("files", "File names must be unique.")
    if total > execution_settings.MAX_SOURCE_BYTES and not from_source:
        errors.add(
            "files",
            f"Source is {total} bytes in all; "
            f"the maximum is {execution_settings.MAX_SOURCE_BYTES}.",
        )
    if runtime and cleaned:
        main = next((item for item in cleaned if item["name"] == main_name), None)
        if main is None:
            errors.add("files", f"Include the main file {main_name!r}.")
        elif not main["content"].strip():
            field_path = "source" if from_source else f"files[{cleaned.index(main)}].content"
            errors.add(field_path, "Source is empty.")
        else:
            # The main file goes first so that it is the one runs and pages open with.
            cleaned.sort(key=lambda item: item["name"] != main_name)
    return cleaned


def _clean_test_cases(
    test_cases: Sequence[TestCaseInput | Mapping[str, Any]], errors: _Errors
) -> list[TestCaseInput]:
    if len(test_cases) > execution_settings.MAX_TEST_CASES:
        errors.add(
            "test_cases", f"At most {execution_settings.MAX_TEST_CASES} test cases are allowed."
        )
        return []
    cleaned = []
    for index, raw in enumerate(test_cases):
        path = f"test_cases[{index}]"
        case = raw if isinstance(raw, TestCaseInput) else None
        if case is None:
            if not isinstance(raw, Mapping):
                errors.add(path, "Must be an object.")
                continue
            unknown = set(raw) - set(TestCaseInput.__dataclass_fields__)
            if unknown:
                errors.add(path, f"Unknown fields: {', '.join(sorted(unknown))}.")
                continue
            case = TestCaseInput(**raw)
        stdin = _clean_text(case.stdin, f"{path}.stdin", execution_settings.MAX_STDIN_BYTES, errors)
        expected = _clean_text(
            case.expected_output,
            f"{path}.expected_output",
            execution_settings.MAX_EXPECTED_OUTPUT_BYTES,
            errors,
        )
        name = _clean_text(case.name, f"{path}.name", 100, errors)
        if case.comparison not in Comparison.values:
            errors.add(f"{path}.comparison", f"Must be one of {', '.join(Comparison.values)}.")
        try:
            tolerance = float(case.tolerance)
        except (TypeError, ValueError):
            tolerance = -1.0
        if not math.isfinite(tolerance) or tolerance < 0:
            errors.add(f"{path}.tolerance", "Must be a non-negative number.")
        if (
            isinstance(case.weight, bool)
            or not isinstance(case.weight, int)
            or not 1 <= case.weight <= MAX_WEIGHT
        ):
            errors.add(f"{path}.weight", f"Must be a whole number from 1 to {MAX_WEIGHT}.")
        if not isinstance(case.hidden, bool):
            errors.add(f"{path}.hidden", "Must be true or false.")
        cleaned.append(
            TestCaseInput(
                stdin=stdin,
                expected_output=expected,
                comparison=case.comparison,
                tolerance=tolerance,
                weight=case.weight,
                hidden=case.hidden,
                name=name,
            )
        )
    return cleaned


def _clean_callback_url(value: object, errors: _Errors) -> str:
    """An http(s) URL whose host, if it is an address, is one a delivery may reach (the
    delivery's own check, allow-list included). A host name is checked at each delivery:
    what it resolves to then is what counts."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        errors.add("callback_url", "Must be a URL.")
        return ""
    try:
        # Before the syntax check, which refuses odd spellings of an address (2130706433,
        # 0x7f.1) too but would not say where they point.
        webhooks.check_literal_host(value)
    except webhooks.Refused as exc:
        errors.add("callback_url", str(exc))
        return ""
    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        errors.add("callback_url", "Must be an http:// or https:// URL.")
        return ""
    if len(value) > 2000:
        errors.add("callback_url", "Must be at most 2000 characters.")
    return value
