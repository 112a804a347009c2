from decimal import Decimal

import pytest

from executions.backends.base import RunResult
from executions.judging import Scored, case_verdict, outputs_match, overall, run_verdict
from executions.models import Verdict


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
