"""Helpers for the webhook tests: a real receiver on a loopback address, and an execution
that ended with a callback URL."""

from __future__ import annotations

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from django.contrib.auth.models import User

from executions import services
from executions.models import Evaluation, Execution


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
