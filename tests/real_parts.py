"""A pytest plugin (loaded with ``-p tests.real_parts``): in CI a test marked
``real_service`` that skipped, for whatever reason, fails instead. CI must never pass by not
running the tests that use the real parts; locally such a test may skip with its reason."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_service: needs a real outside part; in CI a skip of it is a failure"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("CI") and item.get_closest_marker("real_service"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"A real_service test skipped in CI (CI must provide it): {reason}"
