"""Template context shared by every page: which backend runs code here."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from executions.backends import active_selection


def execution_backend(request: HttpRequest) -> dict[str, Any]:
    try:
        selection = active_selection()
    except ImproperlyConfigured as exc:
        return {"execution_backend": None, "execution_backend_error": str(exc)}
    return {"execution_backend": selection}
