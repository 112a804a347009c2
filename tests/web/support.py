"""Helpers of the evaluator pages' tests: the submit form, a scripted backend, a page's figures."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

from executions import services
from executions.models import Evaluation, Runtime
from sandbox.contract import ExecutionBackend, Isolation, RunRequest, RunResult


def submit_form(runtime: Runtime, **overrides: str) -> dict[str, str]:
    data = {
        "title": "Echo",
        "runtime": runtime.name,
        "source": "print(input())\n",
        "stdin": "",
        "time_limit_ms": "",
        "memory_mb": "",
        "output_kb": "",
        "cases-TOTAL_FORMS": "2",
        "cases-INITIAL_FORMS": "0",
        "cases-MIN_NUM_FORMS": "0",
        "cases-MAX_NUM_FORMS": "50",
    }
    for index in range(2):
        data.update(
            {
                f"cases-{index}-name": "",
                f"cases-{index}-stdin": "",
                f"cases-{index}-expected_output": "",
                f"cases-{index}-comparison": "trailing_ws",
                f"cases-{index}-tolerance": "0.000001",
                f"cases-{index}-weight": "1",
            }
        )
    data.update(overrides)
    return data


class ScriptedBackend(ExecutionBackend):
    """Answers each run with the result scripted for its stdin (else echoes it), so a test
    can give each test case the output, stderr and figures it needs."""

    name = "scripted"
    script: ClassVar[dict[bytes, RunResult]] = {}

    def run(self, request: RunRequest) -> RunResult:
        scripted = self.script.get(request.stdin, RunResult(exit_code=0, stdout=request.stdin))
        return dataclasses.replace(scripted, handle=request.handle)

    def describe(self) -> Isolation:
        return Isolation()


def run_cases(
    user: Any, runtime: Runtime, cases: list[dict[str, Any]], **kwargs: Any
) -> Evaluation:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=runtime,
        source=kwargs.pop("source", "print(1)"),
        test_cases=cases,
        **kwargs,
    )
    services.execution_run(evaluation.executions.get().pk)
    return evaluation


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match, f"no #{element_id} on the page"
    return match.group(1).strip()
