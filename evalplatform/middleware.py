"""Middleware of the platform itself: the probes orchestrators call, and the answer to a
request that failed because the database or the broker is out of reach."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from executions.api.errors import error_body
from executions.outages import RETRY_AFTER_S, log_answered, outage_to_answer
from executions.readiness import readiness

API_PREFIX = "/api/"


class HealthCheckMiddleware:
    """Answer ``/healthz`` and ``/readyz`` before host validation and the HTTPS redirect.

    Orchestrators probe the container on its own address over plain HTTP, which neither
    ALLOWED_HOSTS nor SECURE_SSL_REDIRECT would let through. ``/healthz`` is liveness: it
    says only that the process serves, and asks nothing else, so that an outage of the
    database does not get every web process restarted. ``/readyz`` reports the database, the
    broker and the execution backend (``executions.readiness``).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == "/healthz":
            return HttpResponse("ok", content_type="text/plain")
        if request.path_info == "/readyz":
            return _readiness_response()
        return self.get_response(request)


def _readiness_response() -> HttpResponse:
    report = readiness()
    response = HttpResponse(
        json.dumps(report.as_dict()),
        content_type="application/json",
        status=200 if report.ready else 503,
    )
    if not report.ready:
        response["Retry-After"] = str(RETRY_AFTER_S)
        # Readiness logs when a part goes and when it is back, not at every probe.
        response._has_been_logged = True  # type: ignore[attr-defined]
    response["Cache-Control"] = "no-store"
    return response


class OutageMiddleware:
    """Answer a view that failed because the database or the broker cannot be reached with
    ``503`` and ``Retry-After``: JSON in the API's error shape under ``/api/``, a page
    elsewhere. The API's own views are answered by its exception handler; this covers every
    other view, admin included, and never touches the database itself."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        outage = outage_to_answer(exception, request.method or "GET")
        if outage is None:
            return None
        log_answered(outage, exception, request.method or "GET", request.path)
        response: HttpResponse
        if request.path_info.startswith(API_PREFIX):
            response = JsonResponse(error_body(outage.code, outage.message), status=503)
        else:
            # No request context: its processors would ask the database for the user.
            response = HttpResponse(render_to_string("503.html", {"outage": outage}), status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        # Logged above, once in a while; Django's request log would add a line per request.
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
