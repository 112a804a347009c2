"""Helpers for the service tests: submissions through the services, on the real database."""

from __future__ import annotations

import json
from typing import Any

from executions import services
from executions.models import AuditEvent, Evaluation, Execution, Runtime
from executions.models import TestCase as Case


def fake(**spec: Any) -> str:
    """A program whose outcome the fake backend reads from its directive line."""
    return f"# fake: {json.dumps(spec)}\nprint('hello')\n"


def submit(user: Any, runtime: Runtime, **kwargs: Any) -> Evaluation:
    kwargs.setdefault("source", "print('hello')\n")
    return services.evaluation_submit(user=user, runtime=runtime, **kwargs)


def latest(evaluation: Evaluation) -> Execution:
    return evaluation.executions.order_by("-attempt").first()  # type: ignore[return-value]


def nothing_stored() -> bool:
    return not (
        Evaluation.objects.exists()
        or Execution.objects.exists()
        or Case.objects.exists()
        or AuditEvent.objects.exists()
    )
