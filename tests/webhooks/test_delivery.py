"""Webhook deliveries against a real HTTP receiver on 127.0.0.1 (allow-listed here, as an
admin would): signatures, what the payload holds, retries with backoff (through a real
cluster too), the response-size cap, and redirects. The SSRF guard is in
``test_transport.py``; the check of a callback URL at submission in
``tests/services/test_cleaning.py``."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django_q.conf import Conf

from executions import services, webhooks
from executions.conf import execution_settings
from executions.models import Evaluation, Runtime, WebhookDelivery
from tests.api.conftest import api_doc_blocks, client_for
from tests.cluster import clusters, wait_for
from tests.webhooks.conftest import Receiver, ended_execution

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": ["127.0.0.1"]}
    with Receiver() as found:
        yield found


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Deliveries queued (execution id, attempt, delay) instead of sent to the task queue."""
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(
        "executions.webhooks.delivery._enqueue",
        lambda pk, attempt, delay_s=0: calls.append((pk, attempt, delay_s)),
    )
    return calls


def test_signed_delivery_verifies(
    user: User, runtime: Runtime, receiver: Receiver, enqueued: list[Any]
) -> None:
    execution = ended_execution(user, receiver.url)
    receiver.delay_s = 0.05
    started = time.monotonic()
    delivery = webhooks.deliver(execution.pk, 1)
    elapsed_ms = (time.monotonic() - started) * 1000
    assert delivery.succeeded and delivery.status_code == 200
    # The time the receiver took, measured around the request alone.
    assert 50 <= delivery.duration_ms <= elapsed_ms
    [request] = receiver.requests
    assert request["path"] == "/hook?x=1"
    headers = request["headers"]
    assert headers["Host"] == receiver.url.split("/")[2]
    secret = webhooks.webhook_secret_for(user)
    assert webhooks.verify_signature(
        secret,
        request["body"],
        headers["X-Evalplatform-Timestamp"],
        headers["X-Evalplatform-Signature"],
    )
    assert not webhooks.verify_signature(
        secret,
        request["body"] + b" ",
        headers["X-Evalplatform-Timestamp"],
        headers["X-Evalplatform-Signature"],
    )
    assert not webhooks.verify_signature(
        "wrong",
        request["body"],
        headers["X-Evalplatform-Timestamp"],
        headers["X-Evalplatform-Signature"],
    )
    payload = json.loads(request["body"])
    assert payload["event"] == "execution.ended"
    assert payload["execution_id"] == execution.pk and payload["status"] == "finished"
    assert enqueued == []
    # A second delivery of the same task does not send twice.
    assert webhooks.deliver(execution.pk, 1) is None
    assert len(receiver.requests) == 1


def test_the_payload_holds_no_output_nor_test_cases(
    user: User, runtime: Runtime, receiver: Receiver, enqueued: list[Any]
) -> None:
    """The body is exactly the documented fields: what the program printed and what the
    test cases hold stay behind the API, where access is checked."""
    secrets = {
        "stdout": "STDOUT-b81f3c",
        "stderr": "STDERR-5d20e7",
        "stdin": "STDIN-c47a91",
        "expected": "EXPECTED-9e6b02",
        "case name": "CASE-NAME-3fa8d4",
        "source": "SOURCE-e1c7b5",
        "title": "TITLE-0d9a6e",
    }
    directive = json.dumps({"stdout": secrets["stdout"], "stderr": secrets["stderr"]})
    execution = ended_execution(
        user,
        receiver.url,
        source=f"# fake: {directive}\n# {secrets['source']}\n",
        title=secrets["title"],
        test_cases=[
            {
                "stdin": secrets["stdin"],
                "expected_output": secrets["expected"],
                "name": secrets["case name"],
            }
        ],
    )
    [result] = execution.results.all()
    assert secrets["stdout"] in result.stdout_text and secrets["stderr"] in result.stderr_text
    assert webhooks.deliver(execution.pk, 1).succeeded
    [request] = receiver.requests
    body = request["body"].decode()
    assert not [what for what, text in secrets.items() if text in body]
    [documented] = api_doc_blocks("Webhooks", "json")
    assert json.loads(body).keys() == json.loads(documented).keys()
    # The signature is the documented HMAC, computed here without the project's sign().
    timestamp = request["headers"]["X-Evalplatform-Timestamp"]
    digest = hmac.new(
        webhooks.webhook_secret_for(user).encode(),
        f"{timestamp}.".encode() + request["body"],
        hashlib.sha256,
    ).hexdigest()
    assert request["headers"]["X-Evalplatform-Signature"] == f"sha256={digest}"


def test_retries_with_backoff_then_gives_up(
    user: User, runtime: Runtime, receiver: Receiver, enqueued: list[Any], settings: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_MAX_ATTEMPTS": 3}
    receiver.answers = [500, 500, 500]
    execution = ended_execution(user, receiver.url)
    for attempt in (1, 2, 3):
        webhooks.deliver(execution.pk, attempt)
    deliveries = list(WebhookDelivery.objects.order_by("attempt"))
    assert [d.attempt for d in deliveries] == [1, 2, 3]
    assert all(d.status_code == 500 and not d.succeeded for d in deliveries)
    assert deliveries[0].next_retry_at and deliveries[1].next_retry_at
    assert deliveries[2].next_retry_at is None
    assert enqueued == [(execution.pk, 2, 10), (execution.pk, 3, 20)]
    assert len(receiver.requests) == 3


def test_retry_succeeds(
    user: User, runtime: Runtime, receiver: Receiver, enqueued: list[Any]
) -> None:
    receiver.answers = [500]
    execution = ended_execution(user, receiver.url)
    assert not webhooks.deliver(execution.pk, 1).succeeded
    assert webhooks.deliver(execution.pk, 2).succeeded
    assert enqueued == [(execution.pk, 2, 10)]


@pytest.mark.parametrize("status", [199, 400, 404])
def test_an_answer_outside_2xx_fails_and_only_3xx_is_called_a_redirect(
    user: User,
    runtime: Runtime,
    receiver: Receiver,
    enqueued: list[Any],
    settings: Any,
    status: int,
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_MAX_ATTEMPTS": 1}
    receiver.answers = [status]
    delivery = webhooks.deliver(ended_execution(user, receiver.url).pk, 1)
    assert (delivery.status_code, delivery.succeeded) == (status, False)
    assert delivery.error == f"The receiver answered {status}."


@pytest.mark.parametrize("status", [300, 302, 399])
def test_redirects_are_not_followed(
    user: User,
    runtime: Runtime,
    receiver: Receiver,
    enqueued: list[Any],
    settings: Any,
    status: int,
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_MAX_ATTEMPTS": 1}
    receiver.answers = [status]
    execution = ended_execution(user, receiver.url)
    delivery = webhooks.deliver(execution.pk, 1)
    assert delivery.status_code == status and not delivery.succeeded
    assert "Redirects are not followed" in delivery.error
    assert [r["path"] for r in receiver.requests] == ["/hook?x=1"]


class EndlessReceiver:
    """Answers 200 with a body that does not end: it writes until the client hangs up (or,
    so that a client reading everything fails a test instead of hanging it, ``LIMIT``)."""

    LIMIT = 64 * 1024 * 1024

    def __init__(self) -> None:
        self.sent = 0
        self.hung_up = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)  # HTTP/1.0, no Content-Length: the body ends at close
                self.end_headers()
                chunk = b"x" * 65536
                try:
                    while receiver.sent < receiver.LIMIT:
                        self.wfile.write(chunk)
                        receiver.sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    receiver.hung_up.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_an_endless_answer_is_read_only_up_to_the_cap(
    user: User,
    runtime: Runtime,
    settings: Any,
    enqueued: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A receiver cannot make a worker buffer an answer without end, nor keep it reading:
    the worker takes ``WEBHOOK_MAX_RESPONSE_BYTES``, hangs up, and records the 200."""
    cap = 1000
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "WEBHOOK_ALLOWLIST": ["127.0.0.1"],
        "WEBHOOK_MAX_RESPONSE_BYTES": cap,
    }
    endless = EndlessReceiver()
    thread = threading.Thread(target=endless.server.serve_forever, daemon=True)
    thread.start()
    answers: list[webhooks.Response] = []
    real_post = webhooks.post

    def post(*args: Any, **kwargs: Any) -> webhooks.Response:
        answers.append(real_post(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr("executions.webhooks.delivery.post", post)
    try:
        execution = ended_execution(user, endless.url)
        started = time.monotonic()
        delivery = webhooks.deliver(execution.pk, 1)
        elapsed_s = time.monotonic() - started
        [answer] = answers
        assert answer.status_code == 200 and answer.body == b"x" * cap
        assert delivery.succeeded and delivery.status_code == 200 and delivery.error == ""
        assert delivery.duration_ms / 1000 <= elapsed_s < execution_settings.WEBHOOK_TIMEOUT_S
        # The worker hung up after the cap: the receiver's next writes failed.
        assert endless.hung_up.wait(10), f"still sending after {endless.sent} bytes"
    finally:
        endless.server.shutdown()
        endless.server.server_close()


def test_every_terminal_transition_queues_one_delivery(
    user: User,
    runtime: Runtime,
    enqueued: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        finished = ended_execution(user, "https://example.org/hook")
        cancelled = services.evaluation_submit(
            user=user, runtime="python-3.11", source="1\n", callback_url="https://example.org/h"
        ).executions.get()
        services.execution_cancel(user=user, execution=cancelled)
        services.execution_cancel(user=user, execution=cancelled)  # already ended: no hook
        silent = services.evaluation_submit(user=user, runtime="python-3.11", source="1\n")
        services.execution_run(silent.executions.get().pk)
    assert enqueued == [(finished.pk, 1, 0), (cancelled.pk, 1, 0)]


def test_task_entry_point(
    user: User, runtime: Runtime, receiver: Receiver, enqueued: list[Any]
) -> None:
    from executions.tasks import deliver_webhook

    execution = ended_execution(user, receiver.url)
    deliver_webhook(execution.pk, 1)
    assert WebhookDelivery.objects.get().succeeded
    assert Evaluation.objects.get().callback_url == receiver.url


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_delivered_by_the_cluster_when_a_run_ends(
    user: User,
    runtime: Runtime,
    receiver: Receiver,
    tmp_path: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole path: the API submits, a real qcluster runs the execution, the terminal
    hook queues the delivery after commit, and a worker POSTs it, signed."""
    monkeypatch.setattr(Conf, "ORM", "default")
    environ = {"EXECUTION_BACKEND": "fake", "EXECUTION_WEBHOOK_ALLOWLIST": "127.0.0.1"}
    with clusters(tmp_path, settings, monkeypatch, **environ) as start:
        start()
        response = client_for(user).post(
            "/api/v1/evaluations/",
            {"runtime": runtime.name, "source": "print(1)\n", "callback_url": receiver.url},
            format="json",
        )
        assert response.status_code == 201
        wait_for(
            lambda: WebhookDelivery.objects.filter(succeeded=True).exists(),
            30,
            "the webhook delivery",
            tmp_path / "cluster.log",
        )
    [request] = receiver.requests
    headers = request["headers"]
    assert webhooks.verify_signature(
        webhooks.webhook_secret_for(user),
        request["body"],
        headers["X-Evalplatform-Timestamp"],
        headers["X-Evalplatform-Signature"],
    )
    assert json.loads(request["body"])["status"] == "finished"


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_failed_delivery_is_retried_by_the_cluster_once_due(
    user: User,
    runtime: Runtime,
    receiver: Receiver,
    tmp_path: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The delayed branch for real: a failed attempt leaves a django-q2 ``Schedule`` due
    after the backoff, and a real qcluster's scheduler runs it once it is due. (The
    scheduler looks every 30 s, so this waits that long.)"""
    from django_q.models import Schedule

    monkeypatch.setattr(Conf, "ORM", "default")
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_BACKOFF_S": 1}
    receiver.answers = [500]
    # Made before the cluster's queue exists, so that the cluster does not also run the
    # tasks this queues (the execution itself and the first attempt, made here instead).
    execution = ended_execution(user, receiver.url)
    first = webhooks.deliver(execution.pk, 1)
    assert first.status_code == 500 and first.next_retry_at
    retry = Schedule.objects.exclude(name="reap-executions").get()
    assert retry.name == f"webhook-{execution.pk}-2"
    assert retry.func == "executions.tasks.deliver_webhook"
    assert ast.literal_eval(retry.args) == (execution.pk, 2)
    assert retry.schedule_type == Schedule.ONCE and retry.repeats == 1
    assert abs(retry.next_run - first.next_retry_at) < timedelta(milliseconds=500)
    assert timedelta(seconds=1) <= retry.next_run - first.created_at < timedelta(seconds=3)

    environ = {
        "EXECUTION_BACKEND": "fake",
        "EXECUTION_WEBHOOK_ALLOWLIST": "127.0.0.1",
        "EXECUTION_WEBHOOK_BACKOFF_S": "1",
    }
    with clusters(tmp_path, settings, monkeypatch, **environ) as start:
        start()
        wait_for(
            lambda: WebhookDelivery.objects.filter(attempt=2).exclude(duration_ms=None).exists(),
            90,
            "the scheduled retry",
            tmp_path / "cluster.log",
        )
    second = WebhookDelivery.objects.get(attempt=2)
    assert second.succeeded and second.status_code == 200 and second.next_retry_at is None
    assert [r["headers"]["X-Evalplatform-Delivery"] for r in receiver.requests] == [
        f"{execution.pk}-1",
        f"{execution.pk}-2",
    ]
    assert receiver.requests[1]["at"] >= retry.next_run.timestamp()
    assert Schedule.objects.get(pk=retry.pk).repeats == 0  # ran once, and will not again


def test_a_delivery_is_bounded_by_the_webhook_timeout(
    user: User,
    runtime: Runtime,
    receiver: Receiver,
    enqueued: list[Any],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The transport bounds the whole answer by the timeout it is given: the delivery must
    # give it the configured one, never none.
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_TIMEOUT_S": 3}
    given: list[float] = []
    real_post = webhooks.delivery.post

    def post(target: Any, body: bytes, headers: dict[str, str], timeout_s: float) -> Any:
        given.append(timeout_s)
        return real_post(target, body, headers, timeout_s)

    monkeypatch.setattr(webhooks.delivery, "post", post)
    execution = ended_execution(user, receiver.url)
    assert webhooks.deliver(execution.pk, 1).succeeded
    assert given == [3]


def test_a_repeated_attempt_is_logged_with_its_execution(
    user: User,
    runtime: Runtime,
    receiver: Receiver,
    enqueued: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    execution = ended_execution(user, receiver.url)
    assert webhooks.deliver(execution.pk, 1).succeeded
    with caplog.at_level("INFO", logger="executions.webhooks.delivery"):
        assert webhooks.deliver(execution.pk, 1) is None
    assert f"Webhook attempt 1 of execution {execution.pk} was already made." in caplog.text
