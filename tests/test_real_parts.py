"""The ``real_service`` marker is enforced: in CI a marked test that skips fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = """
import pytest

@pytest.mark.real_service
def test_needs_a_part():
    pytest.skip("the part is missing")

@pytest.mark.real_service
@pytest.mark.skipif(True, reason="decided at collection")
def test_skipped_by_a_mark():
    pass

def test_an_ordinary_skip():
    pytest.skip("nothing real is missing")
"""


def run_sample(tmp_path: Path, ci: bool) -> str:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    environ = {k: v for k, v in os.environ.items() if k not in {"CI", "DJANGO_SETTINGS_MODULE"}}
    environ["PYTHONPATH"] = str(ROOT)
    if ci:
        environ["CI"] = "true"
    plugins = ["-p", "tests.real_parts", "-p", "no:django", "-p", "no:kmock"]
    where = ["-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", *plugins, *where],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )
    return result.stdout + result.stderr


@pytest.mark.parametrize("ci", [True, False])
def test_a_skipped_real_service_test_fails_only_in_ci(tmp_path: Path, ci: bool) -> None:
    output = run_sample(tmp_path, ci)
    summary = output.strip().splitlines()[-1]
    if ci:
        # A skip in the test body fails it; a skip at setup (a skipif mark) errors it.
        assert re.match(r"1 failed, 1 skipped, 1 error in ", summary), output
        assert "skipped in CI (CI must provide it): Skipped: the part is missing" in output
    else:
        assert re.match(r"3 skipped in ", summary), output
