"""Fixtures for the API tests: token-authenticated clients for a user, another user and staff;
and, for the webhook tests here and beside ``executions/webhooks.py``, a real receiver."""

from __future__ import annotations

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from executions import services
from executions.models import Evaluation, Execution, Runtime, UserQuota

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(user: User, runtime: Runtime) -> APIClient:
    return client_for(user)


@pytest.fixture
def other_api(other_user: User, runtime: Runtime) -> APIClient:
    return client_for(other_user)


@pytest.fixture
def staff_api(staff: User, runtime: Runtime) -> APIClient:
    return client_for(staff)


@pytest.fixture
def roomy_quota(user: User) -> UserQuota:
    """Enough quota that tests submitting many evaluations are not refused by it."""
    return UserQuota.objects.create(user=user, max_concurrent=10_000, max_per_day=10_000)


def submission(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"runtime": "python-3.11", "source": "print(input())\n"}
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


class Receiver:
    """A webhook receiver on a loopback address, serving from a thread of its own while used
    as a context manager. Records every request (with the time it arrived) and, over TLS,
    the server name (SNI) each client asked for; answers with the next status from
    ``answers`` (then 200), ``delay_s`` after reading the request."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.server_names: list[str | None] = []
        self.delay_s = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                        "at": time.time(),
                    }
                )
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)  # a slow receiver, not a synchronisation
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        if tls is not None:
            tls.sni_callback = lambda _socket, name, _context: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{host}:{self.port}/hook?x=1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()


def ended_execution(user: User, url: str, *, stored: bool = False, **submit: Any) -> Execution:
    """An execution that ended, its evaluation calling back ``url``. ``stored``: the URL is
    written as it is, as for one submitted before an admin narrowed the allow-list (submit
    itself refuses a literal address the allow-list does not cover). ``submit`` overrides
    the submission's other fields."""
    fields: dict[str, Any] = {"runtime": "python-3.11", "source": "print(1)\n", **submit}
    evaluation = services.evaluation_submit(user=user, callback_url="" if stored else url, **fields)
    if stored:
        Evaluation.objects.filter(pk=evaluation.pk).update(callback_url=url)
    execution = evaluation.executions.get()
    services.execution_run(execution.pk)
    return Execution.objects.get(pk=execution.pk)


def api_doc_blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks of the docs/api.md section headed ``section``, in order."""
    blocks: list[str] = []
    in_section = False
    fence: list[str] | None = None  # the lines of the code block being read
    keep = False  # whether that block is one asked for
    for line in API_DOC.read_text().splitlines(keepends=True):
        if fence is not None:
            if line.rstrip() != "```":
                fence.append(line)
                continue
            if keep:
                blocks.append("".join(fence))
            fence = None
        elif line.startswith("```"):
            fence, keep = [], in_section and line.strip() == f"```{language}"
        elif line.startswith("#"):  # a heading: "#" inside a code block never gets here
            in_section = line.lstrip("#").strip() == section
    return blocks
