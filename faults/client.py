"""The suite's API client: the programs it submits, and every answer it got, counted.

Submissions go through ``POST /api/v1/evaluations/``, each titled with its fault and number
and sent with an ``Idempotency-Key``; each is sent once (a refusal is what is under test, not
something to retry). Reads (``GET /api/v1/evaluations/{id}/`` and the list) run from a thread
through a fault, as a client following its runs would. A ``503`` that carries
``Retry-After`` is a refusal the platform promises during an outage; any other 5xx, or no
answer at all, breaks the promise.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import requests

RUNTIME = "python-3.11"


@dataclass(frozen=True)
class Program:
    """What one submission asks to run, and the verdict its run earns."""

    kind: str
    body: dict[str, Any]
    verdict: str = "accepted"


QUICK = Program("quick", {"runtime": RUNTIME, "source": "print(sum(range(1000)))\n"})
# Long enough to be mid-run when a fault strikes.
SLEEPER = Program(
    "sleeper",
    {"runtime": RUNTIME, "source": "import time\ntime.sleep(2.5)\nprint('awake')\n"},
)
TESTED = Program(
    "tested",
    {
        "runtime": RUNTIME,
        "source": "import time\nword = input()\ntime.sleep(0.3)\nprint(word[::-1])\n",
        "test_cases": [
            {"stdin": "ab", "expected_output": "ba"},
            {"stdin": "xyz", "expected_output": "zyx", "weight": 2},
            {"stdin": "fault", "expected_output": "tluaf", "hidden": True},
        ],
    },
)


def mix(count: int, *, sleepers_every: int = 3, tested_every: int = 3) -> list[Program]:
    """``count`` programs, sleepers first (so they run while the rest wait), then programs
    with test cases and quick ones."""
    programs = []
    for number in range(count):
        if number % sleepers_every == 0:
            programs.append(SLEEPER)
        elif number % tested_every == 1:
            programs.append(TESTED)
        else:
            programs.append(QUICK)
    return programs


@dataclass(frozen=True)
class Answer:
    """The answer to one request: ``status`` None when none came (the connection failed)."""

    method: str
    path: str
    status: int | None
    retry_after: str | None = None
    detail: str = ""
    title: str = ""
    evaluation_id: int | None = None
    program: Program | None = None  # of a submission
    replayed: bool = False  # the answer to an earlier request with the same key

    @property
    def expected_verdict(self) -> str:
        return self.program.verdict if self.program is not None else ""

    @property
    def stored(self) -> bool:
        """The platform said it stored the submission."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        """A refusal the platform promises while a part is down: 503 with Retry-After."""
        return self.status == 503 and bool(self.retry_after)

    @property
    def broke_promise(self) -> bool:
        """A 5xx other than a promised refusal, or no answer at all."""
        return self.status is None or (self.status >= 500 and not self.refused)

    def describe(self) -> str:
        status = "no answer" if self.status is None else str(self.status)
        return f"{self.method} {self.path} {self.title}: {status} {self.detail[:300]}".strip()


@dataclass
class Client:
    url: str
    token: str
    submissions: list[Answer] = field(default_factory=list)
    reads: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            fresh = requests.Session()
            fresh.headers["Authorization"] = f"Token {self.token}"
            self._local.session = fresh
        session: requests.Session = self._local.session
        return session

    def _request(self, method: str, path: str, **kwargs: Any) -> tuple[Answer, Any]:
        try:
            response = self._session().request(method, self.url + path, timeout=30, **kwargs)
        except requests.RequestException as exc:
            return Answer(method, path, None, detail=f"{type(exc).__name__}: {exc}"), None
        body = None
        with contextlib.suppress(ValueError):
            body = response.json()
        detail = "" if response.ok else response.text
        answer = Answer(
            method,
            path,
            response.status_code,
            response.headers.get("Retry-After"),
            detail,
            replayed=response.headers.get("Idempotent-Replayed") == "true",
        )
        return answer, body

    def submit(self, program: Program, title: str) -> Answer:
        """Submit ``program`` once, titled ``title``."""
        answer, body = self._request(
            "POST",
            "/api/v1/evaluations/",
            json={**program.body, "title": title},
            headers={"Idempotency-Key": title},
        )
        evaluation_id = body.get("id") if answer.stored and isinstance(body, dict) else None
        answer = replace(answer, title=title, evaluation_id=evaluation_id, program=program)
        with self._lock:
            self.submissions.append(answer)
        return answer

    def submit_all(
        self,
        programs: Sequence[Program],
        prefix: str,
        *,
        concurrency: int = 1,
        first: int = 0,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> list[Answer]:
        """Submit each of ``programs`` as ``{prefix}-{number}``, numbers from ``first``, from
        ``concurrency`` threads; the answers in the programs' order."""

        def one(numbered: tuple[int, Program]) -> Answer:
            number, program = numbered
            answer = self.submit(program, f"{prefix}-{number}")
            if on_answer is not None:
                on_answer(answer)
            return answer

        numbered = list(enumerate(programs, start=first))
        if concurrency == 1:
            return [one(item) for item in numbered]
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(one, numbered))

    def retry_refused(self, answers: Sequence[Answer]) -> list[Answer]:
        """Send again, with the same title and key, each submission of ``answers`` that was
        refused or got no answer, as a client does once the part is back."""
        return [
            self.submit(answer.program, answer.title)
            for answer in answers
            if not answer.stored and answer.program is not None
        ]

    @contextlib.contextmanager
    def submitting(self, program: Program, prefix: str) -> Iterator[list[Answer]]:
        """Submit ``program`` from a thread, one submission after another (titled
        ``{prefix}-{number}``), until the block ends: a client submitting through the fault.
        Yields the list its answers are added to."""
        answers: list[Answer] = []
        stop = threading.Event()

        def keep_submitting() -> None:
            for number in itertools.count():
                answers.append(self.submit(program, f"{prefix}-{number}"))
                if stop.wait(0.05):
                    return

        thread = threading.Thread(target=keep_submitting, name="fault-suite-submitter", daemon=True)
        thread.start()
        try:
            yield answers
        finally:
            stop.set()
            thread.join(timeout=60)

    def read(self, path: str) -> Answer:
        answer, _ = self._request("GET", path)
        with self._lock:
            self.reads.append(answer)
        return answer

    @contextlib.contextmanager
    def reading(self, evaluation_ids: Callable[[], Sequence[int]]) -> Iterator[None]:
        """Read the given evaluations (and the list) from a thread, one request about every
        0.2 s, until the block ends: a client following its runs through the fault."""
        stop = threading.Event()

        def follow() -> None:
            for turn in itertools.count():
                ids = list(evaluation_ids())
                if turn % 5 == 0 or not ids:
                    self.read("/api/v1/evaluations/?page_size=20")
                else:
                    self.read(f"/api/v1/evaluations/{ids[turn % len(ids)]}/")
                if stop.wait(0.2):
                    return

        thread = threading.Thread(target=follow, name="fault-suite-reader", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=60)

    def broken_promises(self, since: int = 0, reads_since: int = 0) -> list[Answer]:
        """Answers (submissions from index ``since``, reads from ``reads_since``) that were a
        5xx other than a promised refusal, or none at all."""
        with self._lock:
            answers = self.submissions[since:] + self.reads[reads_since:]
        return [answer for answer in answers if answer.broke_promise]


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)
