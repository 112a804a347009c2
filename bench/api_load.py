"""Load test of the REST API: N submissions from concurrent clients, every one accounted for.

    .venv/bin/python bench/api_load.py --count 1000 --concurrency 16 --workers 2 \\
        --database-url postgres://postgres@127.0.0.1:5432/evalplatform_load \\
        --redis-url redis://127.0.0.1:6379/1

Starts gunicorn and a ``manage.py qcluster`` (``--workers`` processes, fake backend) on
loopback against the given database (migrated first; its load-test rows are removed at the
start) and broker, then submits ``--count`` evaluations through ``POST /api/v1/evaluations/``
from ``--concurrency`` threads, each with its own ``requests`` session, retrying 429 / 503
after ``Retry-After``. It then waits until every execution has ended and checks in the
database that each submission made exactly one evaluation with exactly one execution in
exactly one terminal state and one ``submit`` audit event: none lost, none duplicated.
Prints throughput; exits non-zero if any check fails.

``submit_all`` and ``verify`` are also used by ``tests/api/test_load.py`` with a small count.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"finished", "cancelled", "refused", "error"}
USERNAME = "api-load"


@dataclass
class SubmitReport:
    ids: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    retries: int = 0
    elapsed_s: float = 0.0


def submit_all(
    base_url: str, tokens: list[str], count: int, concurrency: int, tag: str, runtime: str
) -> SubmitReport:
    """POST ``count`` evaluations titled ``{tag}-{i}``, submission i as the user of
    ``tokens[i % len(tokens)]``; retry back-pressure answers."""
    report = SubmitReport()
    lock = threading.Lock()
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    def one(index: int) -> None:
        body = {"runtime": runtime, "source": "print(1)\n", "title": f"{tag}-{index}"}
        # The key makes a retry after a lost answer safe: it cannot submit twice.
        headers = {"Idempotency-Key": f"{tag}-{index}"}
        for _ in range(50):
            try:
                answer = session().post(
                    f"{base_url}/api/v1/evaluations/",
                    json=body,
                    headers={**headers, "Authorization": f"Token {tokens[index % len(tokens)]}"},
                    timeout=60,
                )
            except requests.RequestException as exc:
                outcome = f"{type(exc).__name__}"
            else:
                if answer.status_code == 201:
                    with lock:
                        report.ids.append(answer.json()["id"])
                    return
                if answer.status_code not in {409, 429, 503}:
                    with lock:
                        report.failures.append(f"{index}: {answer.status_code} {answer.text}")
                    return
                outcome = str(answer.status_code)
            with lock:
                report.retries += 1
            wait = answer.headers.get("Retry-After", "1") if outcome.isdigit() else "1"
            time.sleep(min(float(wait), 5.0))
        with lock:
            report.failures.append(f"{index}: gave up after retries ({outcome})")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(count)))
    report.elapsed_s = time.monotonic() - started
    return report


def wait_terminal(tag: str, count: int, timeout_s: float) -> float:
    """Wait until ``count`` executions of this run's evaluations have ended; returns when."""
    from executions.models import Execution

    deadline = time.monotonic() + timeout_s
    runs = Execution.objects.filter(evaluation__title__startswith=f"{tag}-")
    while time.monotonic() < deadline:
        if runs.filter(status__in=TERMINAL).count() >= count:
            break
        time.sleep(0.25)
    return time.monotonic()


def verify(tag: str, count: int, ids: list[int]) -> dict[str, Any]:
    """Check none lost or duplicated; return the figures, with ``problems`` listing any."""
    from executions.models import AuditEvent, Evaluation, Execution

    problems: list[str] = []
    evaluations = Evaluation.objects.filter(title__startswith=f"{tag}-")
    titles = list(evaluations.values_list("title", flat=True))
    if len(titles) != count:
        problems.append(f"{len(titles)} evaluations stored for {count} submissions")
    if len(set(titles)) != len(titles):
        problems.append("some submission was stored twice")
    if sorted(ids) != sorted(evaluations.values_list("pk", flat=True)):
        problems.append("the ids answered differ from the evaluations stored")
    executions = Execution.objects.filter(evaluation__in=evaluations)
    statuses = Counter(executions.values_list("status", flat=True))
    if executions.count() != count or executions.exclude(attempt=1).exists():
        problems.append(f"{executions.count()} executions for {count} evaluations")
    active = sum(n for status, n in statuses.items() if status not in TERMINAL)
    if active:
        problems.append(f"{active} executions never reached a terminal state")
    audits = AuditEvent.objects.filter(
        evaluation__in=evaluations, action=AuditEvent.Action.SUBMIT
    ).count()
    if audits != count:
        problems.append(f"{audits} submit audit events for {count} evaluations")
    return {"statuses": dict(statuses), "audit_events": audits, "problems": problems}


# Stand-alone run ----------------------------------------------------------------------------


def _setup_django(database_url: str, redis_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalplatform.settings")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _prepare(users: int) -> list[str]:
    """Migrate, and make the load users (no quota limits), their tokens and the runtime.

    Submissions of one user take turns on that user's quota lock, so several users are what
    concurrent automation looks like."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from executions.models import Evaluation, Runtime, UserQuota

    call_command("migrate", verbosity=0)
    tokens = []
    for number in range(users):
        user, _ = User.objects.get_or_create(username=f"{USERNAME}-{number}")
        Evaluation.objects.filter(owner=user).delete()
        UserQuota.objects.update_or_create(
            user=user, defaults={"max_concurrent": 1_000_000, "max_per_day": 1_000_000}
        )
        tokens.append(Token.objects.get_or_create(user=user)[0].key)
    Runtime.objects.get_or_create(
        name="python-3.11",
        defaults={
            "display_name": "Python 3.11",
            "image": "evalplatform/python:3.11",
            "command": ["python3", "main.py"],
        },
    )
    return tokens


@contextlib.contextmanager
def _servers(environ: dict[str, str], port: int, web_workers: int) -> Iterator[None]:
    # A fresh clone has no var/ until the first `make run`.
    (ROOT / "var").mkdir(exist_ok=True)
    log = open(ROOT / "var" / "api_load.log", "ab")  # noqa: SIM115 (closed below)
    gunicorn = [
        sys.executable,
        "-m",
        "gunicorn",
        "evalplatform.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(web_workers),
        "--threads",
        "4",
        "--timeout",
        "120",
    ]
    processes = [
        subprocess.Popen(gunicorn, cwd=ROOT, env=environ, stdout=log, stderr=log),
        subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=environ,
            stdout=log,
            stderr=log,
        ),
    ]
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/api/v1/schema/", timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("The web server did not start; see var/api_load.log")
            time.sleep(0.3)
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="qcluster worker processes")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--users", type=int, default=8, help="submitting users")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL")
        or "postgres://postgres@127.0.0.1:5432/evalplatform_load",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/1"
    )
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    _ensure_database(args.database_url)
    _setup_django(args.database_url, args.redis_url)
    tag = f"load-{uuid.uuid4().hex[:8]}"
    tokens = _prepare(args.users)
    environ = {
        **os.environ,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "EXECUTION_BACKEND": "fake",
        "Q_WORKERS": str(args.workers),
        "Q_CLUSTER_NAME": tag,
        "API_THROTTLE_USER": "1000000/min",
        "API_THROTTLE_SUBMIT": "1000000/min",
        "EXECUTION_MAX_QUEUE_DEPTH": str(max(1000, args.count)),
        "LOG_LEVEL": "WARNING",
    }
    if not args.redis_url:
        environ.pop("REDIS_URL")
    with _servers(environ, args.port, args.web_workers):
        base = f"http://127.0.0.1:{args.port}"
        report = submit_all(base, tokens, args.count, args.concurrency, tag, "python-3.11")
        started = time.monotonic() - report.elapsed_s
        ended = wait_terminal(tag, args.count, args.timeout)
    figures = verify(tag, args.count, report.ids)
    broker = "Redis" if args.redis_url else "ORM"
    print(f"database {args.database_url.split('@')[-1]}, broker {broker}")
    print(
        f"{args.count} submissions by {args.users} users from {args.concurrency} clients, "
        f"{args.web_workers} gunicorn "
        f"processes, {args.workers} qcluster workers, fake backend"
    )
    print(
        f"submitted in {report.elapsed_s:.1f} s: {args.count / report.elapsed_s:.0f} "
        f"submissions/s ({report.retries} back-pressure retries)"
    )
    total = ended - started
    print(f"all ended in {total:.1f} s: {args.count / total:.0f} executions/s end to end")
    print(f"terminal states: {figures['statuses']}; submit audit events: {figures['audit_events']}")
    problems = report.failures + figures["problems"]
    for problem in problems[:20]:
        print("PROBLEM:", problem)
    print("OK: every submission stored once and ended once" if not problems else "FAILED")
    return 1 if problems else 0


def _ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist."""
    if not url.startswith("postgres"):
        return
    import psycopg

    name = url.rsplit("/", 1)[-1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


if __name__ == "__main__":
    raise SystemExit(main())
