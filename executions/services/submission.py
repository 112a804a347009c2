"""Submitting work: an evaluation with its first execution, a batch, a re-run, a cancel.

Each stores its rows and audit event in one transaction and queues the execution's task only
once that transaction commits, so a worker never looks for a row that does not exist yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import NON_FIELD_ERRORS, ImproperlyConfigured, ValidationError
from django.db import transaction
from django.utils import timezone

from executions.backends import active_selection, backend_class
from executions.conf import execution_settings
from executions.models import (
    ACTIVE_STATUSES,
    AuditEvent,
    Evaluation,
    Execution,
    Runtime,
    Status,
    TestCase,
)
from executions.services.cleaning import (
    TestCaseInput,
    _clean_callback_url,
    _clean_files,
    _clean_limit,
    _clean_test_cases,
    _clean_text,
    _Errors,
    _resolve_runtime,
)
from executions.services.dispatch import queue_attempt
from executions.services.quotas import QueueFull, QuotaExceeded, _quota_check
from executions.services.running import _cancel_sandbox, _execution_ended
from sandbox.contract import ErrorKind


def evaluation_submit(
    *,
    user: User,
    runtime: Runtime | str | None,
    source: str | bytes | None = None,
    files: Sequence[Mapping[str, Any]] | None = None,
    stdin: str | bytes = "",
    test_cases: Sequence[TestCaseInput | Mapping[str, Any]] = (),
    time_limit_ms: int | str | None = None,
    memory_mb: int | str | None = None,
    output_kb: int | str | None = None,
    title: str = "",
    callback_url: str = "",
) -> Evaluation:
    """Validate a submission, store it with its first execution, and queue that execution.

    Raises ``ValidationError`` whose ``message_dict`` names every bad field, or its subclasses
    ``QuotaExceeded`` and ``QueueFull``; in any case nothing is stored. ``callback_url`` is
    checked for syntax and scheme here, and so is its host when that is an address; whether
    a host name's addresses may be reached is decided at each delivery (see
    ``executions.webhooks``).
    """
    errors = _Errors()
    clean_callback = _clean_callback_url(callback_url, errors)
    found = _resolve_runtime(runtime, errors)
    cleaned_files = _clean_files(files, source, found, errors)
    clean_stdin = _clean_text(stdin, "stdin", execution_settings.MAX_STDIN_BYTES, errors)
    cases = _clean_test_cases(test_cases, errors)
    clean_title = _clean_text(title, "title", 200, errors)
    limits = {}
    if found is not None:
        limits = {
            "time_limit_ms": _clean_limit(
                time_limit_ms,
                "time_limit_ms",
                found.default_time_limit_ms,
                100,
                found.max_time_limit_ms,
                errors,
            ),
            "memory_mb": _clean_limit(
                memory_mb, "memory_mb", found.default_memory_mb, 16, found.max_memory_mb, errors
            ),
            "output_kb": _clean_limit(
                output_kb, "output_kb", found.default_output_kb, 1, found.max_output_kb, errors
            ),
        }
    errors.raise_if_any()
    assert found is not None

    with transaction.atomic():
        _quota_check(owner_id=user.pk)
        evaluation = Evaluation.objects.create(
            owner=user,
            title=clean_title,
            runtime=found,
            files=cleaned_files,
            stdin=clean_stdin,
            callback_url=clean_callback,
            **limits,
        )
        TestCase.objects.bulk_create(
            TestCase(
                evaluation=evaluation,
                position=position,
                name=case.name,
                stdin=case.stdin,
                expected_output=case.expected_output,
                comparison=case.comparison,
                tolerance=case.tolerance,
                weight=case.weight,
                hidden=case.hidden,
            )
            for position, case in enumerate(cases)
        )
        execution = queue_attempt(evaluation, user=user, backend=active_selection().name)
        AuditEvent.objects.create(
            actor=user,
            action=AuditEvent.Action.SUBMIT,
            evaluation=evaluation,
            execution=execution,
            detail={"runtime": found.name, "test_cases": len(cases), "backend": execution.backend},
        )
    return evaluation


class BatchInvalid(ValidationError):
    """Some submissions of a batch are invalid; ``errors_by_index`` maps each bad item's
    index to its ``message_dict``. Nothing of the batch was stored."""

    def __init__(self, errors_by_index: dict[int, dict[str, list[str]]]) -> None:
        super().__init__(
            {
                f"items[{index}].{path}" if path != NON_FIELD_ERRORS else f"items[{index}]": msgs
                for index, messages in errors_by_index.items()
                for path, msgs in messages.items()
            }
        )
        self.errors_by_index = errors_by_index


def evaluations_submit_batch(
    *, user: User, submissions: Sequence[Mapping[str, Any]]
) -> list[Evaluation]:
    """Submit every item (keyword arguments of ``evaluation_submit``) or none of them.

    All items are validated, in one transaction; if any is invalid the transaction is rolled
    back and ``BatchInvalid`` lists every bad item. ``QuotaExceeded`` and ``QueueFull`` stop
    the batch at once (nothing stored) and are raised as they are, so callers can answer them
    with 429 / 503 like a single submission.
    """
    if len(submissions) > execution_settings.API_MAX_BATCH:
        raise ValidationError(
            {
                "items": [
                    f"A batch holds at most {execution_settings.API_MAX_BATCH} submissions; "
                    f"this one has {len(submissions)}."
                ]
            }
        )
    if not submissions:
        raise ValidationError({"items": ["Give at least one submission."]})
    created: list[Evaluation] = []
    errors: dict[int, dict[str, list[str]]] = {}
    with transaction.atomic():
        for index, item in enumerate(submissions):
            try:
                created.append(evaluation_submit(user=user, **item))
            except (QuotaExceeded, QueueFull):
                raise
            except ValidationError as exc:
                errors[index] = exc.message_dict
        if errors:
            # Leaving the block by an exception rolls back every item, and with them the
            # on_commit hooks that would have queued their executions.
            raise BatchInvalid(errors)
    return created


def execution_rerun(*, user: User, evaluation: Evaluation, backend: str | None = None) -> Execution:
    """Queue a new attempt of ``evaluation``; earlier attempts are kept as they are.

    Raises ``ValidationError`` (``QuotaExceeded`` when the owner's quota is used up); in that
    case nothing is stored.
    """
    errors = _Errors()
    if not evaluation.runtime.enabled:
        errors.add("runtime", f"Runtime {evaluation.runtime.name!r} is disabled.")
    if backend:
        try:
            backend_class(backend)
        except ImproperlyConfigured as exc:
            errors.add("backend", str(exc))
    errors.raise_if_any()
    with transaction.atomic():
        _quota_check(owner_id=evaluation.owner_id)
        Evaluation.objects.select_for_update().filter(pk=evaluation.pk).first()
        execution = queue_attempt(evaluation, user=user, backend=backend or active_selection().name)
        AuditEvent.objects.create(
            actor=user,
            action=AuditEvent.Action.RERUN,
            evaluation=evaluation,
            execution=execution,
            detail={"backend": execution.backend},
        )
    return execution


def execution_cancel(*, user: User, execution: Execution) -> bool:
    """Cancel a queued or running execution. Returns False if it had already ended."""
    now = timezone.now()
    with transaction.atomic():
        ended = Execution.objects.filter(pk=execution.pk, status__in=ACTIVE_STATUSES).update(
            status=Status.CANCELLED,
            finished_at=now,
            error_kind=ErrorKind.CANCELLED,
            error_message=f"Cancelled by {user}.",
        )
        if not ended:
            return False
        AuditEvent.objects.create(
            actor=user,
            action=AuditEvent.Action.CANCEL,
            evaluation_id=execution.evaluation_id,
            execution=execution,
        )
        _execution_ended(execution.pk)
    execution.refresh_from_db()
    if execution.backend_handle:
        transaction.on_commit(lambda: _cancel_sandbox(execution.backend, execution.backend_handle))
    return True
