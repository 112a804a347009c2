"""The faults, each struck at a platform with runs queued and mid-run, and what came of it.

A fault submits its programs over the API (sleepers first, so that some run while the others
wait), strikes when they are where it wants them, notes when the part went away and when it
answered again, then watches the platform's database until every run ended. The ``Outcome``
says how the latest attempt of each evaluation ended, how many automatic re-runs happened,
what was lost, duplicated or half-stored, how many answers broke the promise, and how long
after the part came back every run was terminal or running again (``recovered_s``: the end
of the last moment a run waited on recovery, see ``ledger.waiting_on_recovery``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import psycopg

from faults.client import QUICK, SLEEPER, TESTED, Answer, Client, Program, mix, wait_until
from faults.ledger import TERMINAL, Ledger, Stored, judge, waiting_on_recovery
from faults.parts import DockerEngine, PostgresCluster, RedisServer
from faults.platform import Platform

T = TypeVar("T")

# How long after the part came back every run must be terminal or running again.
PROMISED_RECOVERY_S = 60.0
# How long a fault's runs are watched for, at most, after the part came back.
SETTLE_S = 180.0
# How long a part stays down when a fault holds it down.
OUTAGE_S = 5.0


@dataclass
class Rig:
    """A running platform and the parts it runs on, as the faults reach them."""

    platform: Platform
    database: PostgresCluster
    broker: RedisServer
    engine: DockerEngine
    client: Client
    ledger: Ledger

    def submit(self, name: str, programs: Sequence[Program], first: int = 0) -> list[Answer]:
        return self.client.submit_all(programs, name, first=first)

    def wait_running(
        self, name: str, *, queued_too: bool = True, sandbox: bool = False
    ) -> tuple[str, str]:
        """Wait until a run of ``name`` is mid-run (its sandbox up, with ``sandbox``), and
        with ``queued_too`` another still queued; returns that run's worker and handle."""
        found: list[tuple[str, str]] = []

        def ready() -> bool:
            stored = quietly(lambda: self.ledger.evaluations(name)) or []
            states = Counter(e.latest.status for e in stored if e.latest is not None)
            if queued_too and not states["queued"]:
                return False
            for _, worker, handle in quietly(lambda: self.ledger.running(name)) or []:
                if handle and (not sandbox or self.sandbox_running(handle)):
                    found.append((worker, handle))
                    return True
            return False

        wait_until(ready, f"a run of {name} mid-run", timeout_s=90)
        return found[-1]

    def sandbox_running(self, handle: str) -> bool:
        inspected = self.engine.cli("inspect", "--format", "{{.State.Running}}", handle)
        return inspected.stdout.strip() == "true"

    def wait_idle(self, timeout_s: float = SETTLE_S) -> None:
        """Wait until nothing is queued or running (what an earlier fault left has ended)."""
        wait_until(lambda: quietly(self.ledger.active) == 0, "the platform to be idle", timeout_s)


def quietly(read: Callable[[], T]) -> T | None:
    """``read()``, or None while the database does not answer."""
    try:
        return read()
    except psycopg.Error:
        return None


@dataclass
class Strike:
    """What a fault did: its submissions' answers, when the part went away, and when
    (``time.monotonic()``) it was back."""

    answers: list[Answer]
    struck_at: datetime
    back_clock: float
    note: str = ""


@dataclass
class Outcome:
    name: str
    title: str
    answers: list[Answer]
    stored: list[Stored]
    broken: list[Answer]
    recovered_s: float | None
    ended_s: float | None
    note: str = ""
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.verdict = judge(self.answers, self.stored)
        verdict = self.verdict
        for kind, items in (
            ("lost", verdict.lost),
            ("wrong verdict", verdict.wrong_verdict),
            ("duplicated", verdict.duplicated),
            ("half-stored", verdict.half_stored),
            ("refused yet stored", verdict.refused_but_stored),
        ):
            self.problems += [f"{kind}: {item}" for item in items]
        self.problems += [f"broke the promise: {answer.describe()}" for answer in self.broken]
        if self.recovered_s is None or self.ended_s is None:
            self.problems.append("runs still not ended when the watch gave up on them")
        elif self.recovered_s > PROMISED_RECOVERY_S:
            self.problems.append(
                f"recovered {self.recovered_s:.1f} s after the part came back "
                f"(promised: {PROMISED_RECOVERY_S:g} s)"
            )

    @property
    def kept(self) -> bool:
        return not self.problems


def now() -> datetime:
    return datetime.now(UTC)


# -- the faults -------------------------------------------------------------------------------


def cluster_sigkill(rig: Rig, name: str) -> Strike:
    """The whole cluster (its process group) SIGKILLed with runs queued and running, then
    started again."""
    answers = rig.submit(name, mix(8))
    rig.wait_running(name)
    struck_at = now()
    rig.platform.kill_cluster()
    time.sleep(1)
    rig.platform.start_cluster()
    return Strike(answers, struck_at, time.monotonic())


def worker_sigkill(rig: Rig, name: str) -> Strike:
    """One worker process SIGKILLed mid-run; its sentinel starts another."""
    answers = rig.submit(name, mix(8))
    worker, _ = rig.wait_running(name)
    struck_at = now()
    rig.platform.kill_cluster_process(int(worker.rsplit(":", 1)[1]))
    return Strike(answers, struck_at, time.monotonic(), f"killed worker {worker}")


def engine_restart(rig: Rig, name: str) -> Strike:
    """The Docker engine stopped as an operator stops it (SIGTERM: it stops its sandboxes,
    letting them end within their stop timeout), down for 4 s, then started."""
    answers = rig.submit(name, mix(8))
    rig.wait_running(name, sandbox=True)
    struck_at = now()
    stopping = time.monotonic()
    rig.engine.stop()
    stopped_in = time.monotonic() - stopping
    time.sleep(4)
    rig.engine.start()
    return Strike(answers, struck_at, time.monotonic(), f"engine took {stopped_in:.1f} s to stop")


def sandbox_killed(rig: Rig, name: str) -> Strike:
    """``docker kill`` of a session's container from outside the platform."""
    answers = rig.submit(name, mix(8))
    _, handle = rig.wait_running(name, sandbox=True)
    struck_at = now()
    killed = rig.engine.cli("kill", handle)
    if killed.returncode:
        raise RuntimeError(f"docker kill {handle} failed: {killed.stderr}")
    return Strike(answers, struck_at, time.monotonic(), f"killed {handle}")


def redis_restart(rig: Rig, name: str) -> Strike:
    """Redis restarted (empty: tasks in it are lost) with runs queued and running, while a
    client keeps submitting."""
    answers = rig.submit(name, mix(8))
    rig.wait_running(name)
    with rig.client.submitting(QUICK, f"{name}-during") as during:
        time.sleep(0.5)
        struck_at = now()
        rig.broker.stop()
        rig.broker.start()
        back_clock = time.monotonic()
        time.sleep(0.5)
    return Strike(answers + during, struck_at, back_clock)


def postgres_restart(rig: Rig, name: str) -> Strike:
    """``pg_ctl restart -m fast`` with runs queued and running, while a client keeps
    submitting: every connection is cut, whatever it was doing. The client then sends what
    was refused again, with the same key."""
    answers = rig.submit(name, mix(8))
    rig.wait_running(name)
    with rig.client.submitting(QUICK, f"{name}-during") as during:
        time.sleep(0.5)
        struck_at = now()
        rig.database.restart()
        back_clock = time.monotonic()
        time.sleep(0.5)
    answers += during
    answers += rig.client.retry_refused(answers)
    return Strike(answers, struck_at, back_clock)


def submit_redis_down(rig: Rig, name: str) -> Strike:
    """Submissions while Redis is down: stored (201), and run once it is back."""
    answers = rig.submit(name, [SLEEPER, TESTED, QUICK])
    rig.wait_running(name, queued_too=False)
    struck_at = now()
    down = time.monotonic()
    rig.broker.stop()
    answers += rig.submit(name, mix(6), first=len(answers))
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
    rig.broker.start()
    return Strike(answers, struck_at, time.monotonic())


def submit_postgres_down(rig: Rig, name: str) -> Strike:
    """Submissions while PostgreSQL is down: refused (503 with Retry-After) and not stored;
    sent again with the same keys once it is back, they are stored and run."""
    answers = rig.submit(name, [SLEEPER, TESTED, QUICK])
    rig.wait_running(name, queued_too=False)
    struck_at = now()
    down = time.monotonic()
    rig.database.stop()
    answers += rig.submit(name, mix(6), first=len(answers))
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
    rig.database.start()
    back_clock = time.monotonic()
    answers += rig.client.retry_refused(answers)
    return Strike(answers, struck_at, back_clock)


BURST = 200


def burst_worker_killed(rig: Rig, name: str) -> Strike:
    """200 submissions from 8 clients at once; one worker SIGKILLed mid-run during them."""
    programs = mix(BURST, sleepers_every=25, tested_every=4)
    killed: list[tuple[datetime, float, str]] = []
    answered: list[Answer] = []
    lock = threading.Lock()  # the clients' threads call this; one of them strikes, once

    def strike_once(answer: Answer) -> None:
        with lock:
            answered.append(answer)
            if killed or len(answered) < BURST // 4:
                return
            for _, worker, _ in quietly(lambda: rig.ledger.running(name)) or []:
                if worker:
                    killed.append((now(), time.monotonic(), worker))
                    rig.platform.kill_cluster_process(int(worker.rsplit(":", 1)[1]))
                    return

    answers = rig.client.submit_all(programs, name, concurrency=8, on_answer=strike_once)
    if not killed:
        raise RuntimeError(f"no run of the burst was running after {BURST // 4} answers")
    struck_at, back_clock, worker = killed[0]
    return Strike(answers, struck_at, back_clock, f"killed worker {worker}")


@dataclass(frozen=True)
class Fault:
    name: str
    title: str
    strike: Callable[[Rig, str], Strike]
    settle_s: float = SETTLE_S


FAULTS: tuple[Fault, ...] = (
    Fault("cluster-sigkill", "cluster SIGKILLed, started again", cluster_sigkill),
    Fault("worker-sigkill", "one worker SIGKILLed mid-run", worker_sigkill),
    Fault("engine-restart", "Docker engine stopped 4 s, started", engine_restart),
    Fault("sandbox-killed", "sandbox killed (docker kill)", sandbox_killed),
    Fault("redis-restart", "Redis restarted", redis_restart),
    Fault("postgres-restart", "PostgreSQL restarted (-m fast)", postgres_restart),
    Fault("submit-redis-down", "submissions while Redis is down", submit_redis_down),
    Fault("submit-postgres-down", "submissions while PostgreSQL is down", submit_postgres_down),
    Fault(
        "burst-worker-killed",
        f"{BURST}-submission burst, a worker killed",
        burst_worker_killed,
        settle_s=600.0,
    ),
)
# What CI runs (tests/test_faults.py): the engine restart and the burst take longer.
CI_FAULTS = (
    "cluster-sigkill",
    "redis-restart",
    "postgres-restart",
    "sandbox-killed",
    "submit-redis-down",
)


def run_fault(rig: Rig, fault: Fault, turn: int = 1) -> Outcome:
    """Strike ``fault`` at the platform (for the ``turn``-th time) and watch its runs until
    each ended (at most its ``settle_s`` after the part came back)."""
    rig.wait_idle()
    # Its submissions' titles start with this, and no other fault's (nor turn's) do.
    name = fault.name if turn == 1 else f"{fault.name}.{turn}"
    submitted, read = len(rig.client.submissions), len(rig.client.reads)
    ids = lambda: [a.evaluation_id for a in rig.client.submissions[submitted:] if a.evaluation_id]  # noqa: E731
    with rig.client.reading(ids):
        strike = fault.strike(rig, name)
        recovered_s, ended_s = watch(rig, name, fault.settle_s, strike)
    stored = quietly(lambda: rig.ledger.evaluations(name)) or []
    return Outcome(
        name,
        fault.title if turn == 1 else f"{fault.title} ({turn})",
        strike.answers,
        stored,
        rig.client.broken_promises(submitted, read),
        recovered_s,
        ended_s,
        strike.note,
    )


def watch(
    rig: Rig, name: str, settle_s: float, strike: Strike
) -> tuple[float | None, float | None]:
    """Sample the runs of ``name`` until each ended; return (recovered_s, ended_s) after the
    part came back, None when that never happened within ``settle_s``."""
    recovered_at: float | None = strike.back_clock
    while True:
        sampled = time.monotonic()
        try:
            stored = rig.ledger.evaluations(name)
            activity = rig.ledger.activity()
        except psycopg.Error:
            stored = None  # the database is down; the next sample tells
        if stored is not None:
            waiting = waiting_on_recovery(
                stored, activity, since=strike.struck_at, workers=rig.platform.workers
            )
            if waiting:
                recovered_at = None
            elif recovered_at is None:
                recovered_at = sampled
            if all(e.latest is not None and e.latest.status in TERMINAL for e in stored):
                # Every answered submission is stored by now (the strike returned).
                recovered = (recovered_at or sampled) - strike.back_clock
                return max(0.0, recovered), sampled - strike.back_clock
        if sampled - strike.back_clock > settle_s:
            return None, None
        time.sleep(0.25)
