"""System checks for the execution configuration (``manage.py check``, also at start-up)."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from executions.conf import execution_settings


@checks.register("executions")
def check_backend(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from executions.backends import backend_class, get_backend

    name = execution_settings.BACKEND
    if not name:
        return []
    try:
        backend_class(name)
        get_backend(name)  # its options, e.g. the remote backend's URLs and secret
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="Set EXECUTION_BACKEND to one of the known names, a dotted path, "
                "or leave it unset to choose automatically; give the backend the settings "
                "the message names.",
                id="executions.E001",
            )
        ]
    return []


@checks.register("executions", deploy=True)
def check_deploy(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.conf import settings

    from evalplatform.settings import INSECURE_SECRET_KEY

    messages: list[checks.CheckMessage] = []
    if settings.SECRET_KEY == INSECURE_SECRET_KEY:
        messages.append(
            checks.Error(
                "SECRET_KEY is the development default.",
                hint="Set SECRET_KEY or SECRET_KEY_FILE to a long random value.",
                id="executions.E002",
            )
        )
    messages += _posture_messages()
    if execution_settings.BACKEND == "fake":
        messages.append(
            checks.Warning(
                "EXECUTION_BACKEND is 'fake': submissions are never really run.",
                hint="Use it only in tests.",
                id="executions.W001",
            )
        )
    return messages


def _posture_messages() -> list[checks.CheckMessage]:
    """The security page's execution checks, as system checks: a fail is an error."""
    from django.db import DatabaseError

    from executions.security import Level, posture_checks

    try:
        found = posture_checks(deployment_only=True)
    except (DatabaseError, ImproperlyConfigured):
        return []  # not migrated yet, or the backend check above already reports it
    messages: list[checks.CheckMessage] = []
    for check in found:
        if check.level == Level.PASS:
            continue
        kind = checks.Error if check.level == Level.FAIL else checks.Warning
        code = POSTURE_IDS.get(check.name, "S000")
        messages.append(
            kind(f"{check.name}: {check.detail}", hint=check.fix, id=f"executions.{code}")
        )
    return messages


POSTURE_IDS = {
    "Where the platform runs": "S001",
    "Socket proxy admits only the allow-list": "S002",
    "Sandbox network": "S003",
}
