"""The suite: a platform of its own on parts of its own, every fault struck at it in turn, and
a table of what came of each."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from faults.client import Client
from faults.ledger import Ledger
from faults.parts import (
    PostgresCluster,
    RedisServer,
    docker_engine,
    postgres_cluster,
    redis_server,
)
from faults.platform import Platform, running_platform
from faults.scenarios import PROMISED_RECOVERY_S, Outcome, Rig

RUNTIME_IMAGE = "evalplatform/python:3.11"
WORKERS = 2

# Only admission is widened: the suite submits as one user, faster than the default rates
# and quotas let one user. Every recovery setting keeps its default.
ADMISSION = {
    "API_THROTTLE_USER": "100000/min",
    "API_THROTTLE_SUBMIT": "100000/min",
    "EXECUTION_QUOTA_MAX_CONCURRENT": "100000",
    "EXECUTION_QUOTA_MAX_PER_DAY": "100000",
}


@contextlib.contextmanager
def rig(directory: Path) -> Iterator[Rig]:
    """A production-shaped platform (gunicorn, a qcluster of ``WORKERS`` workers, the Docker
    backend) on a PostgreSQL, a Redis and a Docker engine of its own; logs in ``directory``.
    Raises ``PartUnavailable`` when a part cannot run here."""
    with (
        postgres_cluster(PostgresCluster) as database,
        redis_server(directory, RedisServer) as broker,
        docker_engine(directory, RUNTIME_IMAGE) as engine,
    ):
        platform = Platform(
            directory,
            database_url=database.url,
            redis_url=broker.url,
            backend="docker",
            workers=WORKERS,
            environ={"DOCKER_HOST": engine.url, "LOG_FORMAT": "json", **ADMISSION},
        )
        with running_platform(platform):
            ledger = Ledger(database.url)
            try:
                yield Rig(
                    platform, database, broker, engine, Client(platform.url, platform.token), ledger
                )
            finally:
                ledger.close()


# -- the table --------------------------------------------------------------------------------

HEADER = (
    "fault", "answers", "latest attempts", "re-runs", "lost", "wrong verdict", "duplicated",
    "half-stored", "5xx", "recovered", "all ended", "promise",
)  # fmt: skip


def _counts(counter: Counter[str], *, join: str = ", ") -> str:
    return join.join(f"{key} {count}" for key, count in sorted(counter.items()))


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def row(outcome: Outcome) -> tuple[str, ...]:
    verdict = outcome.verdict
    answers = Counter(
        "no answer" if answer.status is None else str(answer.status) for answer in outcome.answers
    )
    return (
        outcome.title,
        ", ".join(f"{status}: {count}" for status, count in sorted(answers.items())),
        _counts(verdict.states),
        str(verdict.reruns),
        str(len(verdict.lost)),
        str(len(verdict.wrong_verdict)),
        str(len(verdict.duplicated)),
        str(len(verdict.half_stored) + len(verdict.refused_but_stored)),
        str(len(outcome.broken)),
        _seconds(outcome.recovered_s),
        _seconds(outcome.ended_s),
        "kept" if outcome.kept else "BROKEN",
    )


def table(outcomes: Sequence[Outcome]) -> str:
    """A Markdown table, one row per fault."""
    rows = [HEADER, *(row(outcome) for outcome in outcomes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def details(outcomes: Sequence[Outcome]) -> list[str]:
    """What each fault did, and each broken promise, one line each."""
    lines = []
    for outcome in outcomes:
        did = [outcome.note] if outcome.note else []
        did.append(f"{outcome.verdict.resent} tasks sent again or runs returned to the queue")
        lines.append(f"{outcome.name}: {'; '.join(did)}")
        lines += [f"{outcome.name}: {problem}" for problem in outcome.problems[:20]]
    return lines


def summary(outcomes: Sequence[Outcome], wall_s: float) -> str:
    broken = [outcome.name for outcome in outcomes if not outcome.kept]
    verdict = (
        f"BROKEN: {', '.join(broken)}"
        if broken
        else f"every promise kept (each run terminal or running again within "
        f"{PROMISED_RECOVERY_S:g} s of its part coming back)"
    )
    return f"{len(outcomes)} faults in {wall_s:.0f} s wall time; {verdict}"
