"""Verdicts, computed outside the sandbox from what a run produced.

Nothing here runs submitted code; it only compares bytes the sandbox returned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from executions.backends.base import RunResult
from executions.models import Comparison, Verdict


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
    for got, want in zip(actual_tokens, expected_tokens, strict=True):
        try:
            want_number = float(want)
        except ValueError:
            if got != want:
                return False
            continue
        try:
            got_number = float(got)
        except ValueError:
            return False
        if math.isnan(want_number) or math.isnan(got_number):
            if not (math.isnan(want_number) and math.isnan(got_number)):
                return False
            continue
        if not math.isclose(got_number, want_number, rel_tol=tolerance, abs_tol=tolerance):
            return False
    return True


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
