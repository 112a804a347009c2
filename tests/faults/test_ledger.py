"""The fault suite's judge (``faults.ledger``): what counts as lost, duplicated, half-stored or
refused yet stored, and which runs still wait on recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from faults.client import QUICK, Answer
from faults.ledger import Activity, Attempt, Stored, judge, waiting_on_recovery

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
STRUCK = NOW - timedelta(seconds=20)


def attempt(
    number: int = 1,
    status: str = "finished",
    *,
    results: int = 0,
    beat: datetime | None = None,
    automatic: bool = False,
    resent: int = 0,
    error_kind: str = "",
) -> Attempt:
    return Attempt(
        id=number,
        attempt=number,
        status=status,
        verdict="accepted" if status == "finished" else "",
        error_kind=error_kind,
        started_at=beat,
        heartbeat_at=beat,
        automatic=automatic,
        resent=resent,
        results=results,
    )


def stored(pk: int, *attempts: Attempt, title: str = "", cases: int = 0) -> Stored:
    return Stored(pk, title or f"fault-{pk}", cases, attempts)


def answered(
    pk: int | None, status: int = 201, title: str = "", *, replayed: bool = False
) -> Answer:
    return Answer(
        "POST",
        "/api/v1/evaluations/",
        status,
        "30" if status == 503 else None,
        title=title or f"fault-{pk}",
        evaluation_id=pk if status == 201 else None,
        program=QUICK,
        replayed=replayed,
    )


def test_every_answered_submission_finished_once_is_kept() -> None:
    verdict = judge(
        [answered(1), answered(2)],
        [
            stored(1, attempt(1, "error", error_kind="worker_lost"), attempt(2, automatic=True)),
            stored(2, attempt(1, results=3, resent=2), cases=3),
        ],
    )
    assert verdict.states == {"finished": 2}
    assert (verdict.reruns, verdict.resent) == (1, 2)
    assert (verdict.lost, verdict.duplicated, verdict.half_stored) == ([], [], [])
    assert verdict.refused_but_stored == []


def test_a_submission_whose_latest_attempt_did_not_finish_is_lost() -> None:
    verdict = judge(
        [answered(1), answered(2), answered(3, title="fault-9")],
        [
            stored(1, attempt(1, "error", error_kind="worker_lost")),
            stored(2, attempt(1, "queued")),
            stored(3, attempt(1)),
        ],
    )
    assert verdict.lost == [
        "fault-1: its latest attempt is error worker_lost, not finished",
        "fault-2: its latest attempt is queued, not finished",
        # The id answered holds another submission.
        "fault-9: answered 201, not stored",
    ]


def test_a_submission_stored_twice_or_finished_twice_is_duplicated() -> None:
    verdict = judge(
        [answered(1), answered(2, title="fault-1")],
        [
            stored(1, attempt(1), title="fault-1"),
            stored(2, attempt(1), title="fault-1"),
            stored(3, attempt(1), attempt(2, automatic=True)),
        ],
    )
    assert verdict.duplicated == [
        "fault-3: attempts [1, 2] both finished",
        "fault-1: stored 2 times",
    ]


def test_an_evaluation_without_execution_or_a_finish_without_results_is_half_stored() -> None:
    verdict = judge(
        [answered(1), answered(2)],
        [stored(1), stored(2, attempt(1, results=2), cases=3)],
    )
    assert verdict.half_stored == [
        "fault-1: an evaluation without an execution",
        "fault-2: attempt 1 finished with 2 of 3 test results",
    ]
    assert verdict.lost == ["fault-1: its latest attempt is nothing, not finished"]


def test_a_refused_submission_must_not_be_stored() -> None:
    verdict = judge(
        [answered(None, 503, title="fault-1"), answered(None, 503, title="fault-2")],
        [stored(1, attempt(1))],
    )
    assert verdict.refused_but_stored == ["fault-1: answered 503 yet stored"]
    assert verdict.lost == []


def test_a_refused_submission_sent_again_with_its_key() -> None:
    refused = answered(None, 503, title="fault-1")
    # The retry did the work: the refusal stored nothing.
    afresh = judge([refused, answered(1)], [stored(1, attempt(1))])
    assert afresh.refused_but_stored == [] and afresh.lost == []
    # The retry was answered with what the refused request had stored.
    replayed = judge([refused, answered(1, replayed=True)], [stored(1, attempt(1))])
    assert replayed.refused_but_stored == ["fault-1: answered 503 yet stored"]


def test_a_run_that_finished_with_a_verdict_its_program_does_not_earn() -> None:
    wrong = Attempt(1, 1, "finished", "runtime_error", "", None, None, False, 0, 0)
    verdict = judge([answered(1), answered(2)], [stored(1, wrong), stored(2, attempt(1))])
    assert verdict.wrong_verdict == [
        "fault-1: attempt 1 finished runtime_error, its program earns accepted"
    ]
    assert verdict.lost == []


def test_promised_refusals_and_broken_answers() -> None:
    assert answered(None, 503).refused and not answered(None, 503).broke_promise
    without_retry_after = Answer("POST", "/api/v1/evaluations/", 503)
    assert without_retry_after.broke_promise
    assert Answer("GET", "/api/v1/evaluations/1/", 500).broke_promise
    assert Answer("GET", "/api/v1/evaluations/1/", None, detail="ConnectionError").broke_promise
    assert not Answer("GET", "/api/v1/evaluations/1/", 404).broke_promise


def activity(live: int = 0, claimed_ago_s: float | None = None) -> Activity:
    claim = None if claimed_ago_s is None else NOW - timedelta(seconds=claimed_ago_s)
    return Activity(NOW, live, claim)


def test_a_run_held_by_a_dead_worker_waits_on_recovery() -> None:
    runs = [
        stored(1, attempt(1, "running", beat=STRUCK - timedelta(seconds=1))),
        stored(2, attempt(1, "running", beat=NOW - timedelta(seconds=2))),
        stored(3, attempt(1, "error"), attempt(2, "running", beat=NOW, automatic=True)),
    ]
    waiting = waiting_on_recovery(runs, activity(live=2), since=STRUCK, workers=2)
    assert waiting == ["fault-1: attempt 1 running, no live worker"]


def test_a_beat_after_the_fault_but_long_ago_is_no_live_worker() -> None:
    runs = [stored(1, attempt(1, "running", beat=STRUCK + timedelta(seconds=1)))]
    assert waiting_on_recovery(runs, activity(live=0), since=STRUCK, workers=2) == [
        "fault-1: attempt 1 running, no live worker"
    ]


def test_a_queued_run_waits_on_recovery_only_while_the_queue_stands_still() -> None:
    runs = [stored(1, attempt(1, "queued")), stored(2, attempt(1, "finished"))]
    stalled = ["fault-1: attempt 1 queued, queue stalled"]
    assert waiting_on_recovery(runs, activity(live=1), since=STRUCK, workers=2) == stalled
    assert waiting_on_recovery(runs, activity(live=2), since=STRUCK, workers=2) == []
    assert waiting_on_recovery(runs, activity(claimed_ago_s=1), since=STRUCK, workers=2) == []
    assert waiting_on_recovery(runs, activity(claimed_ago_s=10), since=STRUCK, workers=2) == (
        stalled
    )
