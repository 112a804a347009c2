"""Per-user request rates (``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``), read on each
request so that settings overrides apply. A refused request is answered 429 with
``Retry-After``.

The rates are counted in the cache (Redis when ``REDIS_URL`` is set). When the cache cannot
be reached the throttles let requests through rather than refuse them or fail: rates protect
the platform from bursts, and while they are not counted the per-user quotas and the queue's
depth cap, kept in the database, still bound the work anyone can create. Reads, which need
nothing from Redis, keep working through a Redis outage.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle

from executions.outages import outage_of

logger = logging.getLogger(__name__)

# After the cache fails, requests pass without asking it for this long: a cache that times
# out (rather than refusing at once) would otherwise add its timeout to every request.
CACHE_RETRY_S = 5.0


class _CacheState:
    """When this process may ask the cache again (monotonic seconds)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.skip_until = 0.0

    def skipping(self) -> bool:
        with self.lock:
            return time.monotonic() < self.skip_until

    def failed(self) -> None:
        with self.lock:
            self.skip_until = time.monotonic() + CACHE_RETRY_S

    def reset(self) -> None:
        with self.lock:
            self.skip_until = 0.0


_cache_state = _CacheState()


class UserThrottle(UserRateThrottle):
    """Every API request of a user (or, unauthenticated, of an address)."""

    scope = "user"

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        return None if rate is None else str(rate)

    def allow_request(self, request: Any, view: Any) -> bool:
        """DRF's count, or True without counting while the cache is out of reach."""
        if self.rate is None or _cache_state.skipping():
            return True
        try:
            return super().allow_request(request, view)
        except Exception as exc:
            if outage_of(exc) is None:
                raise
            _cache_state.failed()
            logger.warning(
                "Request rates are not counted: the cache cannot be reached; "
                "requests are let through",
                exc_info=exc,
            )
            return True


class SubmitThrottle(UserThrottle):
    """POSTs that create work (submit, batch, re-run), counted apart from reads and polls."""

    scope = "submit"

    def allow_request(self, request: Any, view: Any) -> bool:
        if request.method != "POST":
            return True
        return super().allow_request(request, view)


@receiver(setting_changed)
def _forget_cache_failure(*, setting: str, **kwargs: object) -> None:
    # Another cache (tests, settings overrides) is asked afresh.
    if setting == "CACHES":
        _cache_state.reset()
