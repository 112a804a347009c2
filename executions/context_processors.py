"""Template context shared by every page: which backend runs code here."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from executions.backends import active_selection
from executions.security import next_step


def execution_backend(request: HttpRequest) -> dict[str, Any]:
    try:
        selection = active_selection()
    except ImproperlyConfigured as exc:
        return {"execution_backend": None, "execution_backend_error": str(exc)}
    context: dict[str, Any] = {"execution_backend": selection}
    if selection.name == "disabled" and not selection.configured:
        # Chosen for want of a safe backend: every page that mentions it names the way out.
        context["execution_next_step"] = next_step()
    return context
