"""The ``EXECUTIONS`` settings namespace, read lazily so ``override_settings`` works.

``DEFAULTS`` is the one place its defaults are written: the settings module sets a key only
when its environment variable is set (evalplatform/variables.py), and reads ``DEFAULTS``
itself, so this module imports nothing that needs configured settings.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    "BACKEND": "",
    "BACKEND_OPTIONS": {},
    "MAX_SOURCE_BYTES": 64 * 1024,
    "MAX_FILES": 16,
    "MAX_STDIN_BYTES": 1024 * 1024,
    "MAX_TEST_CASES": 50,
    "MAX_EXPECTED_OUTPUT_BYTES": 1024 * 1024,
    "HARD_MAX_WALL_TIME_MS": 60_000,
    "HARD_MAX_MEMORY_MB": 2048,
    "HARD_MAX_OUTPUT_KB": 4096,
    "HEARTBEAT_INTERVAL_S": 5,
    "HEARTBEAT_TIMEOUT_S": 30,
    "REAPER_GRACE_S": 30,
    "QUEUED_STALL_S": 10,
    "AUTO_RERUNS": 2,
    "RECOVERY_INTERVAL_S": 2,
    "WRITE_RETRY_S": 300,
    "QUOTA_MAX_CONCURRENT": 4,
    "QUOTA_MAX_PER_DAY": 500,
    "FAKE_RUN_LOG": "",
    "MAX_QUEUE_DEPTH": 1000,
    "QUEUE_FULL_RETRY_AFTER_S": 10,
    "API_MAX_WAIT_S": 30,
    "API_MAX_BATCH": 50,
    "API_MAX_PAGE_SIZE": 100,
    "API_MAX_BODY_BYTES": 16 * 1024 * 1024,
    "WEBHOOK_ALLOWLIST": [],
    "WEBHOOK_MAX_ATTEMPTS": 5,
    "WEBHOOK_BACKOFF_S": 10,
    "WEBHOOK_TIMEOUT_S": 5,
    "WEBHOOK_MAX_RESPONSE_BYTES": 64 * 1024,
}


class ExecutionSettings:
    """Attribute access to ``settings.EXECUTIONS`` merged over ``DEFAULTS``."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown EXECUTIONS setting: {name!r}")
        if name not in self._cache:
            user = getattr(settings, "EXECUTIONS", {})
            self._cache[name] = user.get(name, DEFAULTS[name])
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


execution_settings = ExecutionSettings()


@receiver(setting_changed)
def _reload_execution_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "EXECUTIONS":
        execution_settings.reload()
