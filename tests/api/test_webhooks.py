"""Webhooks against a real HTTP receiver on 127.0.0.1 (allow-listed here, as an admin would):
signatures, retries with backoff, the SSRF guard and redirects."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django_q.conf import Conf

from executions import services, webhooks
from executions.models import Evaluation, Execution, Runtime, WebhookDelivery
from tests.api.conftest import client_for
from tests.cluster import clusters, wait_for

pytestmark = pytest.mark.django_db


class Receiver:
    """Records every request; answers with the next status from ``answers`` (then 200)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": ["127.0.0.1"]}
    found = Receiver()
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Deliveries queued (execution id, attempt, delay) instead of sent to the task queue."""
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(
        webhooks, "_enqueue", lambda pk, attempt, delay_s=0: calls.append((pk, attempt, delay_s))
    )
    return calls


def ended_execution(user: User, url: str, *, stored: bool = False) -> Execution:
    """An execution that ended, its evaluation calling back ``url``. ``stored``: the URL is
    written as it is, as for one submitted before an admin narrowed the allow-list (submit
    itself refuses a literal address the allow-list does not cover)."""
    evaluation = services.evaluation_submit(
        user=user, runtime="python-3.11", source="print(1)\n", callback_url="" if stored else url
    )
    if stored:
        Evaluation.objects.filter(pk=evaluation.pk).update(callback_url=url)
    execution = evaluation.executions.get()
    services.execution_run(execution.pk)
    return Execution.objects.get(pk=execution.pk)


def test_signed_delivery_verifies(
    user: User, runtime: Runtime, receiver: Receiver, enqueued: list[Any]
) -> None:
    execution = ended_execution(user, receiver.url)
    delivery = webhooks.deliver(execution.pk, 1)
    assert delivery.succeeded and delivery.status_code == 200 and delivery.duration_ms >= 0
    [request] = receiver.requests
    assert request["path"] == "/hook?x=1"
    headers = request["headers"]
    assert headers["Host"] == receiver.url.split("/")[2]
    secret = services.webhook_secret_for(user)
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


def test_old_signatures_are_refused() -> None:
    body = b"{}"
    signature = webhooks.sign("s", 1000, body)
    assert webhooks.verify_signature("s", body, "1000", signature, now=1100)
    assert not webhooks.verify_signature("s", body, "1000", signature, now=2000)
    assert not webhooks.verify_signature("s", body, "soon", signature)


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


def test_redirects_are_not_followed(
    user: User, runtime: Runtime, receiver: Receiver, enqueued: list[Any], settings: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_MAX_ATTEMPTS": 1}
    receiver.answers = [302]
    execution = ended_execution(user, receiver.url)
    delivery = webhooks.deliver(execution.pk, 1)
    assert delivery.status_code == 302 and not delivery.succeeded
    assert "Redirects are not followed" in delivery.error
    assert [r["path"] for r in receiver.requests] == ["/hook?x=1"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9/", "loopback"),
        ("http://localhost:9/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::1]:9/", "loopback"),
        ("http://[::ffff:127.0.0.1]:9/", "loopback"),
        ("http://0.0.0.0:9/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
def test_private_targets_are_refused(
    user: User, runtime: Runtime, enqueued: list[Any], url: str, reason: str
) -> None:
    """At delivery, a name is refused by what it resolves to, and a literal address (stored
    before the allow-list changed) by itself."""
    execution = ended_execution(user, url, stored=True)
    delivery = webhooks.deliver(execution.pk, 1)
    assert not delivery.succeeded and delivery.status_code is None
    assert delivery.error.startswith("Refused:") and reason in delivery.error
    assert "EXECUTION_WEBHOOK_ALLOWLIST" in delivery.error
    assert delivery.next_retry_at is None and enqueued == []


def test_allowlist_by_cidr(settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": ["10.0.0.0/8"]}
    assert webhooks.resolve_target("http://10.1.2.3:8080/x").address == "10.1.2.3"
    with pytest.raises(webhooks.Refused):
        webhooks.resolve_target("http://192.168.1.1/")


def test_only_http_schemes() -> None:
    with pytest.raises(webhooks.Refused, match="Only http and https"):
        webhooks.resolve_target("file:///etc/passwd")


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
        services.webhook_secret_for(user),
        request["body"],
        headers["X-Evalplatform-Timestamp"],
        headers["X-Evalplatform-Signature"],
    )
    assert json.loads(request["body"])["status"] == "finished"


# Literal addresses at submission ----------------------------------------------------------

REFUSED_LITERALS = [
    ("http://127.0.0.1/hook", "loopback"),
    ("https://127.8.9.10:8443/", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.0.1/", "private"),
    ("http://169.254.1.1/", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://240.0.0.1/", "private"),  # 240.0.0.0/4: Python counts it as private
    ("http://[::127.0.0.1]/", "reserved"),  # IPv4-compatible, deprecated
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[::1]/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]:8080/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    # Spellings the resolver reads as 127.0.0.1, as a delivery would connect to it.
    ("http://2130706433/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff10\uff11/", "loopback"),  # full-width
    ("http://user:pass@127.0.0.1:80/", "loopback"),
    ("ftp://127.0.0.1/", "loopback"),
]


def submit_callback(client: Any, url: str) -> Any:
    return client.post(
        "/api/v1/evaluations/",
        {"runtime": "python-3.11", "source": "print(1)\n", "callback_url": url},
        format="json",
    )


@pytest.mark.parametrize(("url", "reason"), REFUSED_LITERALS)
def test_literal_addresses_are_refused_at_submit(
    user: User, runtime: Runtime, url: str, reason: str
) -> None:
    response = submit_callback(client_for(user), url)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    [message] = error["fields"].pop("callback_url")
    assert error["fields"] == {}
    assert reason in message and "EXECUTION_WEBHOOK_ALLOWLIST" in message
    assert Evaluation.objects.count() == 0


@pytest.mark.parametrize(("url", "reason"), REFUSED_LITERALS)
def test_submit_and_delivery_refuse_alike(url: str, reason: str) -> None:
    """One check, so one answer: what submit refuses, a delivery refuses with the same
    words."""
    with pytest.raises(webhooks.Refused) as at_submit:
        webhooks.check_literal_host(url)
    if url.startswith("http"):
        with pytest.raises(webhooks.Refused) as at_delivery:
            webhooks.resolve_target(url)
        assert str(at_delivery.value) == str(at_submit.value)


def test_batch_names_the_item(user: User, runtime: Runtime, roomy_quota: Any) -> None:
    items = [
        {"runtime": "python-3.11", "source": "1\n", "callback_url": "https://example.org/h"},
        {"runtime": "python-3.11", "source": "1\n", "callback_url": "http://[::1]:9/h"},
        {"runtime": "python-3.11", "source": "1\n", "callback_url": "http://2130706433/"},
    ]
    response = client_for(user).post("/api/v1/evaluations/batch/", {"items": items}, format="json")
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"items[1].callback_url", "items[2].callback_url"}
    assert "loopback" in fields["items[1].callback_url"][0]
    assert Evaluation.objects.count() == 0


@pytest.mark.parametrize(
    ("allowlist", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.1:8080/hook"),
        (["127.0.0.0/8"], "http://127.1.2.3/hook"),
        (["10.0.0.0/8"], "http://10.1.2.3/hook"),
        (["::1"], "http://[::1]:8080/hook"),
        (["169.254.169.254"], "http://169.254.169.254/"),
    ],
)
def test_allowlisted_literals_are_accepted(
    user: User, runtime: Runtime, settings: Any, allowlist: list[str], url: str
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": allowlist}
    response = submit_callback(client_for(user), url)
    assert response.status_code == 201, response.content
    assert response.json()["callback_url"] == url
    # The delivery's own check agrees.
    assert webhooks.resolve_target(url).address


def test_allowlist_covers_only_what_it_names(user: User, runtime: Runtime, settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": ["10.0.0.0/8"]}
    response = submit_callback(client_for(user), "http://192.168.1.1/")
    assert response.status_code == 400
    assert "private" in response.json()["error"]["fields"]["callback_url"][0]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/hook",
        "http://93.184.215.14/hook",
        "http://[2606:4700:4700::1111]/hook",
        # A name is judged by what it resolves to, at delivery (see above).
        "http://localhost:9/hook",
        "https://internal.example/hook",
    ],
)
def test_public_literals_and_names_are_accepted(user: User, runtime: Runtime, url: str) -> None:
    response = submit_callback(client_for(user), url)
    assert response.status_code == 201, response.content


def test_service_names_the_field(user: User, runtime: Runtime) -> None:
    with pytest.raises(ValidationError) as refused:
        services.evaluation_submit(
            user=user, runtime="python-3.11", source="1\n", callback_url="http://0x7f.1/"
        )
    assert list(refused.value.message_dict) == ["callback_url"]
    assert Evaluation.objects.count() == 0


def test_schema_documents_the_rule(runtime: Runtime) -> None:
    from rest_framework.test import APIClient

    schema = APIClient().get("/api/v1/schema/?format=json").json()
    field = schema["components"]["schemas"]["SubmitInputRequest"]["properties"]["callback_url"]
    assert "IP address" in field["description"]
    assert "EXECUTION_WEBHOOK_ALLOWLIST" in field["description"]
