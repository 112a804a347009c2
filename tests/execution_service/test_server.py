"""The execution service's HTTP server: runs, idempotency, long polls, cancel, health, retention.

Served in process over a stub backend. No Docker: the sandbox is not under test here.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from execution_service import VERSION, server
from sandbox import wire
from sandbox.contract import ErrorKind, Health, RunRequest, RunResult

from .stub_service import CAPS, SECRET, Node, body_of, echo, error_of, make_request

# -- a run, start to finish


def test_a_signed_run_is_accepted_and_its_result_returned(node: Node) -> None:
    node.backend.gate.clear()
    request = make_request()
    accepted = node.put(request)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["run_id"] == "run-1"
    assert accepted.json()["status"] in ("queued", "running")
    assert "result" not in accepted.json(), "no result before the run is done"
    assert node.backend.entered.get(timeout=5) == "run-1"
    pending = node.get("run-1")
    assert pending.status_code == 200
    assert pending.json() == {"run_id": "run-1", "status": "running"}

    node.backend.gate.set()
    done = node.finish("run-1")
    assert wire.result_from_json(done["result"]) == RunResult(
        exit_code=3,
        stdout=b"in\x00put" + b"print(1)\n",
        stderr=b"blob,main.py",
        wall_time_ms=500,
        handle="run-1",
    )
    # The backend got the request as the platform built it, bytes and all.
    assert node.backend.received == [request]


def test_a_long_poll_returns_as_soon_as_the_run_is_done(node: Node) -> None:
    node.backend.gate.clear()
    assert node.put(make_request()).status_code == 202
    node.backend.entered.get(timeout=5)
    threading.Timer(0.2, node.backend.gate.set).start()
    began = time.monotonic()
    assert node.get("run-1", wait_s=20).json()["status"] == "done"
    assert time.monotonic() - began < 5, "the poll waited for its full length"


def test_a_long_poll_is_cut_at_max_wait(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "MAX_WAIT_S", 0.2)
    node.backend.gate.clear()
    assert node.put(make_request()).status_code == 202
    began = time.monotonic()
    answer = node.get("run-1", wait_s=3600)
    assert answer.status_code == 200
    assert answer.json()["status"] in ("queued", "running")
    assert 0.15 < time.monotonic() - began < 5


@pytest.mark.parametrize("wait", ["soon", "1s", "0x10"])
def test_a_wait_that_is_not_a_number_is_refused(node: Node, wait: str) -> None:
    assert node.put(make_request()).status_code == 202
    answer = node.call("GET", f"/v1/runs/run-1?wait={wait}")
    assert answer.status_code == 400
    assert error_of(answer) == "wait must be a number"


def test_an_unknown_run_is_404(node: Node) -> None:
    answer = node.get("never-submitted")
    assert answer.status_code == 404
    assert error_of(answer) == "no run never-submitted"


# -- idempotent submission


def test_the_same_body_again_returns_the_existing_run(node: Node) -> None:
    node.backend.gate.clear()
    request = make_request()
    assert node.put(request).status_code == 202
    again = node.put(request)
    assert again.status_code == 200
    assert again.json()["run_id"] == "run-1"
    node.backend.gate.set()
    node.finish("run-1")
    # And after it is done: still the same run, with its result, never run twice.
    done_again = node.put(request)
    assert done_again.status_code == 200
    assert done_again.json()["status"] == "done"
    assert done_again.json()["result"]["exit_code"] == 3
    assert len(node.backend.received) == 1


def test_a_different_body_under_the_same_id_is_409(node: Node) -> None:
    assert node.put(make_request()).status_code == 202
    other = node.put(make_request(stdin=b"other input"))
    assert other.status_code == 409
    assert error_of(other) == "run run-1 exists with a different request"
    node.finish("run-1")
    assert [r.stdin for r in node.backend.received] == [b"in\x00put"]


def test_the_same_run_spelt_differently_is_a_different_body(node: Node) -> None:
    """Idempotency compares the exact bytes, which the platform's client keeps stable."""
    body = body_of(make_request())
    assert node.put(make_request(), body).status_code == 202
    assert node.put(make_request(), body + b" ").status_code == 409


# -- cancel


def test_cancel_reaches_the_backend_with_the_handle(node: Node) -> None:
    node.backend.gate.clear()
    assert node.put(make_request("to-stop")).status_code == 202
    node.backend.entered.get(timeout=5)
    answer = node.call("POST", "/v1/runs/to-stop/cancel")
    assert answer.status_code == 200
    assert answer.json()["run_id"] == "to-stop"
    assert node.backend.cancelled == ["to-stop"]
    result = wire.result_from_json(node.finish("to-stop")["result"])
    assert result.error_kind is ErrorKind.CANCELLED


def test_cancelling_a_finished_run_does_not_touch_the_backend(node: Node) -> None:
    assert node.put(make_request()).status_code == 202
    node.finish("run-1")
    answer = node.call("POST", "/v1/runs/run-1/cancel")
    assert answer.status_code == 200
    assert answer.json()["status"] == "done"
    assert answer.json()["result"]["exit_code"] == 3
    assert node.backend.cancelled == []


def test_cancelling_an_unknown_run_is_404(node: Node) -> None:
    answer = node.call("POST", "/v1/runs/nobody/cancel")
    assert answer.status_code == 404
    assert node.backend.cancelled == []


# -- health


def test_health_reports_the_backends_health_and_the_capacity(start: Callable[..., Node]) -> None:
    node = start(max_concurrent_per_service=3)
    node.backend.health_answer = Health(ok=False, detail="engine down", version="27.1")
    assert node.health() == {
        "ok": False,
        "detail": "engine down",
        "backend": "stub",
        "backend_version": "27.1",
        "version": VERSION,
        "capacity": 3,
        "in_use": 0,
        "runs_started": 0,
        "caps": dataclasses.asdict(CAPS),
    }
    assert node.backend.health_calls == 1, "health asks the backend every time"


def test_health_counts_runs_in_use_and_started(node: Node) -> None:
    node.backend.gate.clear()
    assert node.put(make_request("a")).status_code == 202
    node.backend.entered.get(timeout=5)
    during = node.health()
    assert (during["in_use"], during["runs_started"]) == (1, 1)
    node.backend.gate.set()
    node.finish("a")
    assert node.put(make_request("b")).status_code == 202
    node.finish("b")
    after = node.health()
    assert (after["in_use"], after["runs_started"]) == (0, 2)


def test_a_health_check_that_raises_is_500_and_the_service_goes_on(node: Node) -> None:
    node.backend.health_answer = RuntimeError("engine socket gone")
    answer = node.call("GET", "/v1/health")
    assert answer.status_code == 500
    assert error_of(answer) == "internal error: engine socket gone"
    node.backend.health_answer = Health(ok=True, detail="back")
    assert node.health()["detail"] == "back"


# -- a backend that breaks its contract


def test_a_backend_that_raises_gives_a_failure_result_and_frees_its_slot(
    start: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    node = start(max_concurrent_per_service=1)

    def explode(request: RunRequest) -> RunResult:
        raise RuntimeError("engine exploded")

    node.backend.answer = explode
    with caplog.at_level("ERROR", logger="execution_service"):
        assert node.put(make_request("boom")).status_code == 202
        result = wire.result_from_json(node.finish("boom")["result"])
    assert result == RunResult.failure(
        ErrorKind.BACKEND_ERROR, "execution service error: engine exploded", handle="boom"
    )
    assert [r.getMessage() for r in caplog.records] == ["backend raised on run boom"]
    node.backend.answer = echo
    assert node.put(make_request("next")).status_code == 202, "the slot was given back"
    assert node.finish("next")["result"]["exit_code"] == 3


# -- retention


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_a_finished_run_is_forgotten_after_retention_s(
    start: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(server, "time", clock)
    node = start(retention_s=600)
    assert node.put(make_request()).status_code == 202
    node.finish("run-1")
    clock.now += 600
    assert node.get("run-1").status_code == 200, "kept for retention_s inclusive"
    clock.now += 0.5
    assert node.get("run-1").status_code == 404
    # The id is free again: a different run under it is new, not a conflict.
    assert node.put(make_request(stdin=b"new")).status_code == 202


def test_a_run_in_flight_is_never_forgotten(
    start: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(server, "time", clock)
    node = start(retention_s=1, retention_count=0)
    node.backend.gate.clear()
    assert node.put(make_request()).status_code == 202
    clock.now += 3600
    assert node.get("run-1").status_code == 200
    # The poll that was waiting when the run finished gets the result; the next request
    # forgets it (a run that finished before its first poll would be gone already).
    threading.Timer(0.3, node.backend.gate.set).start()
    assert node.finish("run-1")["result"]["exit_code"] == 3
    assert node.get("run-1").status_code == 404


def test_at_most_retention_count_finished_runs_are_kept(start: Callable[..., Node]) -> None:
    node = start(retention_count=2)
    for run_id in ("r1", "r2", "r3"):
        assert node.put(make_request(run_id)).status_code == 202
        node.finish(run_id)
    assert node.get("r1").status_code == 404, "the oldest goes first"
    assert node.get("r2").status_code == 200
    assert node.get("r3").status_code == 200
    assert list(node.service.runs) == ["r2", "r3"]


# -- the platform's client


def test_the_platforms_remote_backend_runs_through_this_server(node: Node) -> None:
    """The client and the server agree on paths, signing and the wire without Docker."""
    from executions.backends.remote import RemoteBackend

    client = RemoteBackend(urls=[node.url], secret=SECRET, poll_wait_s=1, grace_s=5)
    request = make_request("from-platform")
    result = client.run(request)
    assert result == echo(request)
    assert node.backend.received == [request]
    assert client.health().ok is True
