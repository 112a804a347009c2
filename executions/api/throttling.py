"""Per-user request rates (``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``), read on each
request so that settings overrides apply. A refused request is answered 429 with
``Retry-After``."""

from __future__ import annotations

from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle


class UserThrottle(UserRateThrottle):
    """Every API request of a user (or, unauthenticated, of an address)."""

    scope = "user"

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        return None if rate is None else str(rate)


class SubmitThrottle(UserThrottle):
    """POSTs that create work (submit, batch, re-run), counted apart from reads and polls."""

    scope = "submit"

    def allow_request(self, request: Any, view: Any) -> bool:
        if request.method != "POST":
            return True
        return super().allow_request(request, view)
