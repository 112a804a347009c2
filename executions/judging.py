"""Verdicts, computed outside the sandbox from what a run produced.

Nothing here runs submitted code; it only compares bytes the sandbox returned.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from executions.models import Comparison, CompileStatus, Verdict
from sandbox.contract import RunResult, compiled


def run_verdict(result: RunResult) -> Verdict:
    """The verdict for a run before its output is compared.

    Limits come first: a program killed at the deadline may also have a non-zero exit.
    """
    if result.timed_out:
        return Verdict.TIME_LIMIT
    if result.oom_killed:
        return Verdict.MEMORY_LIMIT
    if result.output_limit_exceeded:
        return Verdict.OUTPUT_LIMIT
    if result.signal is not None or result.exit_code != 0:
        return Verdict.RUNTIME_ERROR
    return Verdict.ACCEPTED


def compile_status(result: RunResult) -> CompileStatus:
    """How a compile step that ran ended: ``COMPILED`` exactly when
    ``sandbox.contract.compiled`` holds, else why not, limits first as in ``run_verdict``."""
    if compiled(result):
        return CompileStatus.COMPILED
    if result.timed_out:
        return CompileStatus.TIME_LIMIT
    if result.oom_killed:
        return CompileStatus.MEMORY_LIMIT
    if result.output_limit_exceeded:
        return CompileStatus.OUTPUT_LIMIT
    return CompileStatus.FAILED


def outputs_match(actual: bytes, expected: str, comparison: str, tolerance: float) -> bool:
    if comparison == Comparison.EXACT:
        return actual == expected.encode()
    if comparison == Comparison.TRAILING_WHITESPACE:
        return _rstrip_lines(actual) == _rstrip_lines(expected.encode())
    if comparison == Comparison.NUMERIC:
        return _numbers_match(actual, expected, tolerance)
    raise ValueError(f"Unknown comparison mode: {comparison!r}")


def _rstrip_lines(data: bytes) -> list[bytes]:
    lines = [line.rstrip() for line in data.replace(b"\r\n", b"\n").split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _numbers_match(actual: bytes, expected: str, tolerance: float) -> bool:
    """Token by token: numbers within absolute or relative ``tolerance``, other tokens equal."""
    try:
        actual_tokens = actual.decode("utf-8").split()
    except UnicodeDecodeError:
        return False
    expected_tokens = expected.split()
    if len(actual_tokens) != len(expected_tokens):
        return False
    return all(
        _token_matches(got, want, tolerance)
        for got, want in zip(actual_tokens, expected_tokens, strict=True)
    )


def _token_matches(got: str, want: str, tolerance: float) -> bool:
    try:
        want_number = float(want)
    except ValueError:
        return got == want
    try:
        got_number = float(got)
    except ValueError:
        return False
    if math.isnan(want_number) or math.isnan(got_number):
        return math.isnan(want_number) and math.isnan(got_number)
    return math.isclose(got_number, want_number, rel_tol=tolerance, abs_tol=tolerance)


def case_verdict(result: RunResult, *, expected: str, comparison: str, tolerance: float) -> Verdict:
    verdict = run_verdict(result)
    if verdict == Verdict.ACCEPTED and not outputs_match(
        result.stdout, expected, comparison, tolerance
    ):
        return Verdict.WRONG_ANSWER
    return verdict


@dataclass(frozen=True)
class Scored:
    verdict: Verdict
    weight: int


def overall(cases: Iterable[Scored]) -> tuple[Verdict, Decimal]:
    """The execution's verdict (the first case that was not accepted) and its 0-100 score."""
    cases = list(cases)
    total = sum(case.weight for case in cases)
    earned = sum(case.weight for case in cases if case.verdict == Verdict.ACCEPTED)
    verdict = next((c.verdict for c in cases if c.verdict != Verdict.ACCEPTED), Verdict.ACCEPTED)
    score = Decimal(100) if total == 0 else (Decimal(100) * earned / total)
    return verdict, score.quantize(Decimal("0.01"))


# Where a wrong answer first differs ----------------------------------------------------------

# What ``bytes.rstrip()`` strips: text must be trimmed as ``_rstrip_lines`` trims bytes, or a
# line ending in, say, a no-break space would match here and not there.
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class Position:
    """A place in one output. ``line`` and ``column`` count from 1 (``column`` in characters);
    ``text`` is that whole line as the comparison saw it (with its newline in exact mode).
    ``present`` is False when the output had already ended there."""

    line: int
    column: int
    text: str
    present: bool = True


@dataclass(frozen=True)
class Difference:
    """Where the actual output first differs from the expected one under a test's comparison.

    ``actual.text`` may hold lone surrogates standing for bytes that are not UTF-8
    (``surrogateescape``): make it visible before showing it. ``note`` says in words what
    kind of difference it is when that helps, e.g. a missing final newline.
    """

    expected: Position
    actual: Position
    whitespace_only: bool
    note: str = ""


def first_difference(
    actual: bytes, expected: str, comparison: str, tolerance: float
) -> Difference | None:
    """The first place where ``actual`` differs from ``expected`` as ``outputs_match`` sees
    them, or None when they match."""
    if outputs_match(actual, expected, comparison, tolerance):
        return None
    # surrogateescape keeps every byte distinct, so text equality is byte equality.
    text = actual.decode("utf-8", errors="surrogateescape")
    if comparison == Comparison.EXACT:
        return _line_difference(_lines_keepends(text), _lines_keepends(expected), exact=True)
    if comparison == Comparison.TRAILING_WHITESPACE:
        return _line_difference(_trimmed_lines(text), _trimmed_lines(expected), exact=False)
    return _token_difference(text, expected, tolerance)


def _lines_keepends(text: str) -> list[str]:
    """Lines split at ``\\n`` only (not at the other breaks ``str.splitlines`` knows),
    each with its newline."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def _trimmed_lines(text: str) -> list[str]:
    """``_rstrip_lines`` on text; line numbers stay those of the original output."""
    lines = [line.rstrip(_ASCII_WHITESPACE) for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _line_difference(got: list[str], want: list[str], *, exact: bool) -> Difference | None:
    index = next((i for i in range(max(len(got), len(want))) if _at(got, i) != _at(want, i)), None)
    if index is None:
        return None
    got_line, want_line = _at(got, index), _at(want, index)
    column = _common_prefix_length(got_line or "", want_line or "") + 1
    actual = Position(index + 1, column, got_line or "", present=got_line is not None)
    expected = Position(index + 1, column, want_line or "", present=want_line is not None)
    whitespace_only = _squeezed(got) == _squeezed(want)
    if whitespace_only:
        note = _whitespace_note(actual, expected, last_line=index == len(got) - 1, exact=exact)
    elif got_line is None:
        note = f"The output ends after line {len(got)}; the expected output goes on."
    elif want_line is None:
        note = f"The output goes on after the expected output ends at line {len(want)}."
    else:
        note = ""
    return Difference(expected=expected, actual=actual, whitespace_only=whitespace_only, note=note)


def _common_prefix_length(one: str, other: str) -> int:
    return next(
        (i for i, (a, b) in enumerate(zip(one, other, strict=False)) if a != b),
        min(len(one), len(other)),
    )


def _at(lines: list[str], index: int) -> str | None:
    return lines[index] if index < len(lines) else None


def _squeezed(lines: list[str]) -> str:
    return "".join("".join(line.split()) for line in lines)


def _char(position: Position) -> str:
    """The character at ``position``, or "" at the end of its line (or of the output)."""
    return position.text[position.column - 1 : position.column]


def _whitespace_note(actual: Position, expected: Position, *, last_line: bool, exact: bool) -> str:
    got, want = _char(actual), _char(expected)
    line = actual.line
    if "\r" in (got, want):
        return f"Line {line} ends differently: \\r\\n (Windows) against \\n."
    if exact and want == "\n" and got == "" and last_line:
        return "The output has no final newline."
    if _blank(got) and want in ("\n", ""):
        return f"Line {line} has trailing whitespace the expected output does not."
    if _blank(want) and got in ("\n", ""):
        return f"Line {line} lacks trailing whitespace the expected output has."
    if not expected.present or (got == "\n" and want == ""):
        return "The output has extra line breaks at the end."
    if not actual.present or (want == "\n" and got == ""):
        return "The output lacks line breaks the expected output has."
    if actual.column == 1 and (got.isspace() or want.isspace()):
        return f"Line {line} starts with different whitespace."
    return "Only whitespace differs: spaces, tabs or line breaks."


def _blank(char: str) -> bool:
    """Whitespace within a line (not a line break)."""
    return char.isspace() and char not in "\n\r"


def _token_difference(actual: str, expected: str, tolerance: float) -> Difference | None:
    # Lazily: a megabyte of output is half a million tokens, and only the first that differs
    # is of interest.
    got_tokens, want_tokens = _TOKEN.finditer(actual), _TOKEN.finditer(expected)
    last_got: re.Match[str] | None = None
    last_want: re.Match[str] | None = None
    for index, (got, want) in enumerate(itertools.zip_longest(got_tokens, want_tokens)):
        if got is not None and want is not None:
            if _token_matches(got.group(), want.group(), tolerance):
                last_got, last_want = got, want
                continue
            note = f"Token {index + 1} differs (numbers may differ by {tolerance:g})."
        else:
            got_count = index + (got is not None) + sum(1 for _ in got_tokens)
            want_count = index + (want is not None) + sum(1 for _ in want_tokens)
            note = f"The output has {got_count} tokens; {want_count} were expected."
        return Difference(
            expected=_token_position(expected, want, last_want),
            actual=_token_position(actual, got, last_got),
            whitespace_only=False,
            note=note,
        )
    return None


def _token_position(
    text: str, token: re.Match[str] | None, previous: re.Match[str] | None
) -> Position:
    """Where ``token`` starts, or just after the ``previous`` one when the output ran out."""
    offset = token.start() if token else (previous.end() if previous else 0)
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return Position(
        line=text.count("\n", 0, offset) + 1,
        column=offset - start + 1,
        text=text[start : end if end != -1 else len(text)],
        present=token is not None,
    )


# Why a program did not start --------------------------------------------------------------

PYTHON_LANGUAGES = frozenset({"python", "python3"})
# An interpreter's report of a syntax error is a few lines; a bigger stderr means the program
# ran and printed, and scanning it is not worth the cost.
_START_FAILURE_MAX_STDERR = 64 * 1024
_PYTHON_FILE_LINE = re.compile(r'^\s*File "[^"\n]*", line (\d{1,9})', re.MULTILINE)
_PYTHON_SYNTAX_ERROR = re.compile(r"^(SyntaxError|IndentationError|TabError)(?::|$)")
_PYTHON_TRACEBACK = "Traceback (most recent call last):"


@dataclass(frozen=True)
class StartFailure:
    """What stopped a program before it started, as its runtime reported it."""

    kind: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.kind} at line {self.line}" if self.line else self.kind


def start_failure(
    language: str, exit_code: int | None, stderr: bytes | memoryview
) -> StartFailure | None:
    """Why the program did not start (e.g. a Python ``SyntaxError``), when the runtime can
    tell from its exit code and stderr; None otherwise.

    A label for people only: stderr is the program's, so a program can fake it. It never
    changes a verdict or a score.
    """
    if language.lower() not in PYTHON_LANGUAGES or exit_code != 1:
        return None
    if len(stderr) > _START_FAILURE_MAX_STDERR:
        return None
    text = bytes(stderr).decode("utf-8", errors="replace")
    # A traceback means main.py ran: the syntax error was raised later, e.g. by an import.
    if _PYTHON_TRACEBACK in text:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    match = _PYTHON_SYNTAX_ERROR.match(lines[-1]) if lines else None
    if match is None:
        return None
    numbers = _PYTHON_FILE_LINE.findall(text)
    return StartFailure(match.group(1), int(numbers[-1]) if numbers else None)
