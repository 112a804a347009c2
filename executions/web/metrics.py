"""``/metrics``: the platform's Prometheus metrics, for a scraper that holds the token.

Off (404 to everyone) unless ``METRICS_TOKEN`` is set; then a request must carry
``Authorization: Bearer <token>``, or it gets 401 and nothing else. Answered before host
validation and the HTTPS redirect, as ``/healthz`` is, so that Prometheus can scrape each web
process at its own address on the private network; the token is what protects it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

from executions import metrics

METRICS_PATH = "/metrics"


class MetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info != METRICS_PATH:
            return self.get_response(request)
        token: str = getattr(settings, "METRICS_TOKEN", "")
        if not token:
            return HttpResponse(status=404, content_type="text/plain")
        if not bearer_matches(request, token):
            refused = HttpResponse(status=401, content_type="text/plain")
            refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return refused
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
        response = HttpResponse(body, content_type=content_type)
        response["Cache-Control"] = "no-store"
        return response


def bearer_matches(request: HttpRequest, token: str) -> bool:
    """Whether the request's ``Authorization`` header is ``Bearer <token>`` (compared in
    constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
