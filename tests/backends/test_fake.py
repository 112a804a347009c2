"""The fake backend: deterministic stand-in runs for the platform's tests."""

from __future__ import annotations

from executions.backends.fake import FakeBackend
from tests.backends.runs import request


def test_fake_echoes_stdin_and_caps_output() -> None:
    result = FakeBackend().run(request(stdin=b"0123456789abcdef"))
    assert (result.exit_code, result.stdout, result.stdout_truncated) == (0, b"0123456789", True)


def test_fake_follows_its_directive() -> None:
    files = {"main.py": b'# fake: {"stdout": "x", "exit_code": 4, "stderr": "boom"}\n'}
    result = FakeBackend().run(request(files=files))
    assert (result.stdout, result.stderr, result.exit_code) == (b"x", b"boom", 4)
