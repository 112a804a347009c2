from decimal import Decimal

import pytest

from executions.judging import (
    Difference,
    Position,
    Scored,
    StartFailure,
    case_verdict,
    compile_status,
    first_difference,
    outputs_match,
    overall,
    run_verdict,
    start_failure,
)
from executions.models import CompileStatus, Verdict
from sandbox.contract import RunResult


@pytest.mark.parametrize(
    ("result", "verdict"),
    [
        (RunResult(exit_code=0), Verdict.ACCEPTED),
        (RunResult(exit_code=1), Verdict.RUNTIME_ERROR),
        (RunResult(exit_code=None, signal=11), Verdict.RUNTIME_ERROR),
        (RunResult(exit_code=137, timed_out=True), Verdict.TIME_LIMIT),
        (RunResult(exit_code=137, oom_killed=True), Verdict.MEMORY_LIMIT),
        (RunResult(exit_code=0, stdout_truncated=True), Verdict.OUTPUT_LIMIT),
        (RunResult(exit_code=0, stderr_truncated=True), Verdict.OUTPUT_LIMIT),
        # A deadline kill is a time limit even if memory also ran out afterwards.
        (RunResult(exit_code=137, timed_out=True, oom_killed=True), Verdict.TIME_LIMIT),
    ],
)
def test_run_verdict(result: RunResult, verdict: Verdict) -> None:
    assert run_verdict(result) == verdict


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (RunResult(exit_code=0, stderr=b"warning"), CompileStatus.COMPILED),
        (RunResult(exit_code=1), CompileStatus.FAILED),
        (RunResult(exit_code=None, signal=9), CompileStatus.FAILED),
        (RunResult(exit_code=137, timed_out=True, oom_killed=True), CompileStatus.TIME_LIMIT),
        (RunResult(exit_code=137, oom_killed=True), CompileStatus.MEMORY_LIMIT),
        (RunResult(exit_code=0, stderr_truncated=True), CompileStatus.OUTPUT_LIMIT),
    ],
)
def test_compile_status_says_why_a_compile_step_failed(
    result: RunResult, status: CompileStatus
) -> None:
    assert compile_status(result) == status


@pytest.mark.parametrize(
    ("actual", "expected", "matches"),
    [
        (b"42\n", "42\n", True),
        (b"42", "42\n", False),
        (b"42\n\n", "42\n", False),
        (b"a\r\nb\n", "a\nb\n", False),
    ],
)
def test_exact(actual: bytes, expected: str, matches: bool) -> None:
    assert outputs_match(actual, expected, "exact", 0) is matches


@pytest.mark.parametrize(
    ("actual", "expected", "matches"),
    [
        (b"42   \n\n\n", "42", True),
        (b"a \r\nb\t\n", "a\nb", True),
        (b"a\n\nb", "a\nb", False),
        (b" 42", "42", False),  # leading whitespace is significant
        (b"42\n43", "42", False),
    ],
)
def test_ignore_trailing_whitespace(actual: bytes, expected: str, matches: bool) -> None:
    assert outputs_match(actual, expected, "trailing_ws", 0) is matches


@pytest.mark.parametrize(
    ("actual", "expected", "tolerance", "matches"),
    [
        (b"3.14159\n", "3.1416", 1e-4, True),
        (b"3.14159\n", "3.1416", 1e-7, False),
        (b"1e9 2", "1000000001 2", 1e-6, True),  # relative tolerance for large values
        (b"x = 1.0", "x = 1", 1e-9, True),  # non-numeric tokens compare exactly
        (b"y = 1.0", "x = 1", 1e-9, False),
        (b"1 2", "1 2 3", 1e-6, False),
        (b"nan", "nan", 1e-6, True),
        (b"nan", "1", 1e-6, False),
        (b"abc", "1", 1e-6, False),
        (b"\xff\xfe", "1", 1e-6, False),
    ],
)
def test_numeric(actual: bytes, expected: str, tolerance: float, matches: bool) -> None:
    assert outputs_match(actual, expected, "numeric", tolerance) is matches


def test_unknown_comparison_is_an_error() -> None:
    with pytest.raises(ValueError, match="fuzzy"):
        outputs_match(b"", "", "fuzzy", 0)


def test_case_verdict_compares_only_clean_runs() -> None:
    wrong = RunResult(exit_code=0, stdout=b"41\n")
    assert case_verdict(wrong, expected="42", comparison="exact", tolerance=0) == "wrong_answer"
    crashed = RunResult(exit_code=1, stdout=b"42")
    assert case_verdict(crashed, expected="42", comparison="exact", tolerance=0) == "runtime_error"


def test_overall_weights_and_first_failure() -> None:
    verdict, score = overall(
        [
            Scored(Verdict.ACCEPTED, 3),
            Scored(Verdict.TIME_LIMIT, 1),
            Scored(Verdict.WRONG_ANSWER, 2),
            Scored(Verdict.ACCEPTED, 2),
        ]
    )
    assert verdict == Verdict.TIME_LIMIT
    assert score == Decimal("62.50")


def test_overall_all_accepted() -> None:
    assert overall([Scored(Verdict.ACCEPTED, 1)] * 3) == (Verdict.ACCEPTED, Decimal("100.00"))


# first_difference ----------------------------------------------------------------------------


def test_no_difference_when_the_comparison_accepts() -> None:
    assert first_difference(b"42  \n\n", "42", "trailing_ws", 0) is None
    assert first_difference(b"3.14159", "3.1416", "numeric", 1e-4) is None
    assert first_difference(b"42\n", "42\n", "exact", 0) is None


def test_first_differing_line_and_character() -> None:
    found = first_difference(b"1\n2\nhello world\n4\n", "1\n2\nhello there\n4\n", "exact", 0)
    assert found == Difference(
        expected=Position(3, 7, "hello there\n"),
        actual=Position(3, 7, "hello world\n"),
        whitespace_only=False,
    )


@pytest.mark.parametrize(
    ("actual", "expected", "line", "column", "note"),
    [
        (b"42", "42\n", 1, 3, "The output has no final newline."),
        (b"42  \n", "42\n", 1, 3, "Line 1 has trailing whitespace the expected output does not."),
        (b"42\n", "42 \n", 1, 3, "Line 1 lacks trailing whitespace the expected output has."),
        (b"1\r\n2\r\n", "1\n2\n", 1, 2, "Line 1 ends differently: \\r\\n (Windows) against \\n."),
        (b"42\n\n", "42\n", 2, 1, "The output has extra line breaks at the end."),
        (b"a  b\n", "a b\n", 1, 3, "Only whitespace differs: spaces, tabs or line breaks."),
    ],
)
def test_whitespace_only_differences_in_exact_mode(
    actual: bytes, expected: str, line: int, column: int, note: str
) -> None:
    found = first_difference(actual, expected, "exact", 0)
    assert found is not None and found.whitespace_only
    assert (found.actual.line, found.actual.column) == (line, column)
    assert found.note == note


def test_trailing_whitespace_mode_ignores_what_it_ignores() -> None:
    # Trailing spaces and a missing final newline are not the difference; the leading space is.
    found = first_difference(b"1   \n 2", "1\n2\n", "trailing_ws", 0)
    assert found is not None and found.whitespace_only
    assert found.actual == Position(2, 1, " 2")
    assert found.expected == Position(2, 1, "2")
    assert found.note == "Line 2 starts with different whitespace."


def test_trailing_whitespace_mode_trims_only_what_bytes_rstrip_trims() -> None:
    # A no-break space is not ASCII whitespace: the comparison keeps it, so must the diff.
    found = first_difference("42\u00a0".encode(), "42", "trailing_ws", 0)
    assert found is not None
    assert found.actual == Position(1, 3, "42\u00a0")
    assert found.whitespace_only
    assert found.note == "Line 1 has trailing whitespace the expected output does not."


def test_an_output_that_ends_early_or_goes_on() -> None:
    short = first_difference(b"1\n2\n", "1\n2\n3\n", "trailing_ws", 0)
    assert short is not None and not short.actual.present and short.expected.present
    assert short.expected == Position(3, 1, "3")
    assert short.note == "The output ends after line 2; the expected output goes on."
    long = first_difference(b"1\n2\n3\n", "1\n2\n", "trailing_ws", 0)
    assert long is not None and not long.expected.present and long.actual.text == "3"
    assert long.note == "The output goes on after the expected output ends at line 2."


def test_bytes_that_are_not_utf8_differ_where_they_are() -> None:
    found = first_difference(b"ab\xffcd\n", "abxcd\n", "exact", 0)
    assert found is not None
    assert found.actual.column == 3 and found.actual.text[2] == "\udcff"
    # U+FFFD in the expected output is not what an invalid byte decodes to here.
    assert first_difference(b"\xff", "\ufffd", "exact", 0) is not None


def test_numeric_mode_points_at_the_first_token_out_of_tolerance() -> None:
    found = first_difference(b"1.0 2.0\n3.5 4.0\n", "1 2\n3 4\n", "numeric", 0.1)
    assert found is not None and not found.whitespace_only
    assert found.actual == Position(2, 1, "3.5 4.0")
    assert found.expected == Position(2, 1, "3 4")
    assert found.note == "Token 3 differs (numbers may differ by 0.1)."
    # Tokens may sit on different lines on each side.
    found = first_difference(b"1\n2\n9", "1 2 3", "numeric", 0)
    assert found is not None
    assert (found.actual.line, found.actual.column) == (3, 1)
    assert (found.expected.line, found.expected.column) == (1, 5)


def test_numeric_mode_with_missing_tokens() -> None:
    found = first_difference(b"1 2", "1 2 3", "numeric", 0)
    assert found is not None and not found.actual.present
    assert found.actual == Position(1, 4, "1 2", present=False)
    assert found.note == "The output has 2 tokens; 3 were expected."
    empty = first_difference(b"", "7", "numeric", 0)
    assert empty is not None and empty.actual == Position(1, 1, "", present=False)


def test_numeric_mode_with_bytes_that_are_not_utf8() -> None:
    found = first_difference(b"1 \xff", "1 2", "numeric", 0)
    assert found is not None and found.actual.column == 3


def test_a_huge_single_line_output_is_handled() -> None:
    actual = b"x" * 1_000_000 + b"y"
    found = first_difference(actual, "x" * 1_000_001, "exact", 0)
    assert found is not None and found.actual.column == 1_000_001


# start_failure -------------------------------------------------------------------------------

SYNTAX_ERROR = b"""  File "/box/main.py", line 3
    print(
         ^
SyntaxError: '(' was never closed
"""
INDENTATION_ERROR = b"""  File "/box/main.py", line 2
    print(1)
    ^
IndentationError: expected an indented block after 'if' statement on line 1
"""
TAB_ERROR = b"""  File "/box/main.py", line 3
    y=2
TabError: inconsistent use of tabs and spaces in indentation
"""
SYNTAX_ERROR_IN_AN_IMPORT = b"""Traceback (most recent call last):
  File "/box/main.py", line 1, in <module>
    import helper
  File "/box/helper.py", line 3
    print(
         ^
SyntaxError: '(' was never closed
"""


@pytest.mark.parametrize(
    ("language", "exit_code", "stderr", "failure"),
    [
        ("python", 1, SYNTAX_ERROR, StartFailure("SyntaxError", 3)),
        ("python", 1, INDENTATION_ERROR, StartFailure("IndentationError", 2)),
        ("Python3", 1, TAB_ERROR, StartFailure("TabError", 3)),
        ("python", 1, b"SyntaxError: invalid syntax\n", StartFailure("SyntaxError")),
        # It ran: the syntax error was raised by an import, under a traceback.
        ("python", 1, SYNTAX_ERROR_IN_AN_IMPORT, None),
        ("python", 1, b"Traceback (most recent call last):\nValueError: x\n", None),
        ("python", 2, SYNTAX_ERROR, None),
        ("python", None, SYNTAX_ERROR, None),
        ("python", 1, b"", None),
        ("python", 1, SYNTAX_ERROR + b"printed after\n", None),
        ("c", 1, SYNTAX_ERROR, None),
        ("python", 1, b"x" * 100_000 + SYNTAX_ERROR, None),
        ("python", 1, b"\xff\x00\n" + SYNTAX_ERROR, StartFailure("SyntaxError", 3)),
    ],
)
def test_start_failure(
    language: str, exit_code: int | None, stderr: bytes, failure: StartFailure | None
) -> None:
    assert start_failure(language, exit_code, stderr) == failure


def test_start_failure_reads_as_a_label() -> None:
    assert str(StartFailure("SyntaxError", 3)) == "SyntaxError at line 3"
    assert str(StartFailure("TabError")) == "TabError"


@pytest.mark.parametrize(
    ("verdict", "score"), [(Verdict.WRONG_ANSWER, "0.00"), (Verdict.ACCEPTED, "100.00")]
)
def test_overall_of_a_single_case_is_all_or_nothing(verdict: Verdict, score: str) -> None:
    assert overall([Scored(verdict, 1)]) == (verdict, Decimal(score))


def test_overall_without_weighted_cases_is_the_runs_own_verdict() -> None:
    # A run without test cases is judged on its exit alone: full score when accepted.
    assert overall([]) == (Verdict.ACCEPTED, Decimal("100.00"))
