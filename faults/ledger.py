"""What the platform stored, read from its database as an operator would (SQL on its tables,
no platform code), and the promise judged on it.

For each submission answered 2xx, its evaluation's latest attempt must have finished (else
it is *lost*) with the verdict its program earns (else the fault changed the verdict: the
program's true result is lost as surely). No submission may be stored twice, nor an
evaluation have two finished attempts (*duplicated*); every evaluation has an execution and
every finished execution the result of each test case (else *half-stored*); a submission
refused (503) must not be stored at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from faults.client import Answer

TERMINAL = frozenset({"finished", "cancelled", "refused", "error"})

# A run is held by a live worker when it beat this recently: two heartbeat intervals (5 s by
# default) and a second.
FRESH_BEAT = timedelta(seconds=11)
# The queue is moving when some run was claimed this recently.
MOVING = timedelta(seconds=3)


@dataclass(frozen=True)
class Attempt:
    """One execution of an evaluation."""

    id: int
    attempt: int
    status: str
    verdict: str
    error_kind: str
    started_at: datetime | None
    heartbeat_at: datetime | None
    automatic: bool  # an automatic re-run of the attempt before
    resent: int  # times its task was sent again, or it went back to the queue
    results: int  # test results stored


@dataclass(frozen=True)
class Stored:
    """One stored evaluation with its attempts, oldest first."""

    id: int
    title: str
    cases: int
    attempts: tuple[Attempt, ...]

    @property
    def latest(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


@dataclass(frozen=True)
class Activity:
    """The platform as a whole at one moment, by the database's clock."""

    now: datetime
    live_running: int  # runs whose worker beat within FRESH_BEAT
    last_claim: datetime | None


class Ledger:
    """Reads of the platform's database at ``database_url``; a read while it is down raises
    ``psycopg.OperationalError``, and the next one connects afresh."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._connection: psycopg.Connection[Any] | None = None

    def _rows(self, query: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(
                self.database_url, autocommit=True, connect_timeout=2
            )
        try:
            return self._connection.execute(query, parameters).fetchall()
        except psycopg.Error:
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None

    def evaluations(self, prefix: str) -> list[Stored]:
        """The evaluations whose title starts with ``{prefix}-``."""
        evaluations = self._rows(
            "SELECT e.id, e.title, (SELECT count(*) FROM executions_testcase c "
            "WHERE c.evaluation_id = e.id) FROM executions_evaluation e "
            "WHERE e.title LIKE %s ORDER BY e.id",
            [prefix + "-%"],
        )
        attempts: dict[int, list[Attempt]] = {}
        for row in self._rows(
            "SELECT x.evaluation_id, x.id, x.attempt, x.status, x.verdict, x.error_kind, "
            "x.started_at, x.heartbeat_at, x.retry_of_id IS NOT NULL, x.requeue_count, "
            "(SELECT count(*) FROM executions_testresult r WHERE r.execution_id = x.id) "
            "FROM executions_execution x JOIN executions_evaluation e "
            "ON e.id = x.evaluation_id WHERE e.title LIKE %s ORDER BY x.attempt",
            [prefix + "-%"],
        ):
            attempts.setdefault(row[0], []).append(Attempt(*row[1:]))
        return [
            Stored(pk, title, cases, tuple(attempts.get(pk, ())))
            for pk, title, cases in evaluations
        ]

    def activity(self) -> Activity:
        now, live, last_claim = self._rows(
            "SELECT clock_timestamp(), "
            "count(*) FILTER (WHERE status = 'running' AND heartbeat_at > clock_timestamp() - "
            "%s), max(started_at) FROM executions_execution",
            [FRESH_BEAT],
        )[0]
        return Activity(now, live, last_claim)

    def active(self) -> int:
        """Runs queued or running, of any evaluation."""
        return int(
            self._rows(
                "SELECT count(*) FROM executions_execution WHERE status IN ('queued', 'running')"
            )[0][0]
        )

    def running(self, prefix: str) -> list[tuple[int, str, str]]:
        """(id, worker, sandbox handle) of the runs of ``prefix`` running now, oldest first."""
        return [
            (row[0], row[1], row[2])
            for row in self._rows(
                "SELECT x.id, x.worker, x.backend_handle FROM executions_execution x "
                "JOIN executions_evaluation e ON e.id = x.evaluation_id "
                "WHERE e.title LIKE %s AND x.status = 'running' ORDER BY x.started_at",
                [prefix + "-%"],
            )
        ]


def waiting_on_recovery(
    stored: Sequence[Stored], activity: Activity, *, since: datetime, workers: int
) -> list[str]:
    """The runs that neither ended nor run again: running with no beat from a live worker
    since ``since`` (when the fault struck), or queued while the queue does not move (no
    worker busy on it and nothing claimed lately). One line for each."""
    moving = activity.live_running >= workers or (
        activity.last_claim is not None and activity.last_claim > activity.now - MOVING
    )
    waiting = []
    for evaluation in stored:
        latest = evaluation.latest
        if latest is None or latest.status in TERMINAL:
            continue
        if latest.status == "running":
            beat = latest.heartbeat_at
            if beat is not None and beat > since and beat > activity.now - FRESH_BEAT:
                continue
            waiting.append(f"{evaluation.title}: attempt {latest.attempt} running, no live worker")
        elif latest.status == "queued" and not moving:
            waiting.append(f"{evaluation.title}: attempt {latest.attempt} queued, queue stalled")
    return waiting


@dataclass
class Verdict:
    """The promise judged on one fault's submissions and what was stored for them."""

    states: Counter[str] = field(default_factory=Counter)
    reruns: int = 0
    resent: int = 0
    lost: list[str] = field(default_factory=list)
    wrong_verdict: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    half_stored: list[str] = field(default_factory=list)
    refused_but_stored: list[str] = field(default_factory=list)


def judge(answers: Sequence[Answer], stored: Sequence[Stored]) -> Verdict:
    verdict = Verdict()
    by_id = {evaluation.id: evaluation for evaluation in stored}
    by_title: dict[str, list[Stored]] = {}
    for evaluation in stored:
        by_title.setdefault(evaluation.title, []).append(evaluation)
        latest = evaluation.latest
        verdict.states[latest.status if latest else "none"] += 1
        verdict.reruns += sum(attempt.automatic for attempt in evaluation.attempts)
        verdict.resent += sum(attempt.resent for attempt in evaluation.attempts)
        finished = [attempt for attempt in evaluation.attempts if attempt.status == "finished"]
        if len(finished) > 1:
            verdict.duplicated.append(
                f"{evaluation.title}: attempts {[a.attempt for a in finished]} both finished"
            )
        if latest is None:
            verdict.half_stored.append(f"{evaluation.title}: an evaluation without an execution")
        for attempt in finished:
            if attempt.results != evaluation.cases:
                verdict.half_stored.append(
                    f"{evaluation.title}: attempt {attempt.attempt} finished with "
                    f"{attempt.results} of {evaluation.cases} test results"
                )
    for title, copies in by_title.items():
        if len(copies) > 1:
            verdict.duplicated.append(f"{title}: stored {len(copies)} times")
    # A title answered 2xx by a request that did the work (not a replay of an earlier one).
    submitted = {answer.title for answer in answers if answer.stored and not answer.replayed}
    judged: set[int | None] = set()
    for answer in answers:
        if answer.stored:
            if answer.evaluation_id in judged:
                continue  # a replay of an answer already judged
            judged.add(answer.evaluation_id)
            answered = by_id.get(answer.evaluation_id or 0)
            if answered is None or answered.title != answer.title:
                verdict.lost.append(f"{answer.title}: answered {answer.status}, not stored")
                continue
            latest = answered.latest
            if latest is None or latest.status != "finished":
                state = "nothing" if latest is None else f"{latest.status} {latest.error_kind}"
                verdict.lost.append(
                    f"{answer.title}: its latest attempt is {state.strip()}, not finished"
                )
            elif answer.expected_verdict and latest.verdict != answer.expected_verdict:
                verdict.wrong_verdict.append(
                    f"{answer.title}: attempt {latest.attempt} finished {latest.verdict}, "
                    f"its program earns {answer.expected_verdict}"
                )
        elif answer.status is not None and answer.title in by_title.keys() - submitted:
            # Stored, refused, and no retry did the work afresh: the refused request stored it.
            verdict.refused_but_stored.append(
                f"{answer.title}: answered {answer.status} yet stored"
            )
    return verdict
