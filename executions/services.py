"""Every change of state: submit, claim and run, finish, cancel, re-run, reap.

Views, the API, admin actions and tasks call these functions and nothing else writes. Each
terminal transition is a conditional update from an active status, so an execution ends
exactly once whoever races to end it (worker, canceller, reaper).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import NON_FIELD_ERRORS, ImproperlyConfigured, ValidationError
from django.db import connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from executions import judging
from executions.backends import active_selection, get_backend
from executions.conf import execution_settings
from executions.models import (
    ACTIVE_STATUSES,
    AuditEvent,
    Comparison,
    Evaluation,
    Execution,
    IdempotencyKey,
    Runtime,
    Status,
    TestCase,
    TestResult,
    UserQuota,
    Verdict,
    WebhookSecret,
)
from sandbox.contract import ErrorKind, RunRequest, RunResult
from sandbox.policy import Limits, SandboxPolicy

logger = logging.getLogger(__name__)

# Time a backend may need around a run (create, start, remove), on top of its wall limit.
RUN_OVERHEAD_S = 10
# A run may wait this long for a free sandbox slot on its node before it starts.
ORPHAN_SLOT_WAIT_S = 30
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
MAX_WEIGHT = 1000


@dataclass(frozen=True)
class TestCaseInput:
    stdin: str = ""
    expected_output: str = ""
    comparison: str = Comparison.TRAILING_WHITESPACE
    tolerance: float = 1e-6
    weight: int = 1
    hidden: bool = False
    name: str = ""


@dataclass
class _Errors:
    """Validation messages keyed by field path, raised together as one ValidationError."""

    messages: dict[str, list[str]] = field(default_factory=dict)

    def add(self, path: str, message: str) -> None:
        self.messages.setdefault(path, []).append(message)

    def raise_if_any(self) -> None:
        if self.messages:
            raise ValidationError(self.messages)


def _clean_text(value: object, path: str, max_bytes: int, errors: _Errors) -> str:
    """Text that is valid UTF-8, has no NUL byte and fits in ``max_bytes``."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            errors.add(path, "Must be valid UTF-8 text.")
            return ""
    if not isinstance(value, str):
        errors.add(path, "Must be text.")
        return ""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        # Lone surrogates: what undecodable bytes turn into with surrogateescape.
        errors.add(path, "Must be valid UTF-8 text.")
        return ""
    if "\x00" in value:
        errors.add(path, "Must not contain NUL bytes.")
    if size > max_bytes:
        errors.add(path, f"Is {size} bytes; the maximum is {max_bytes}.")
    return value


def _clean_limit(
    value: object, path: str, default: int, minimum: int, maximum: int, errors: _Errors
) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        errors.add(path, "Must be a whole number.")
        return default
    try:
        number = int(value)
    except ValueError:
        errors.add(path, "Must be a whole number.")
        return default
    if number < minimum:
        errors.add(path, f"Must be at least {minimum}.")
    elif number > maximum:
        errors.add(path, f"Must be at most {maximum}, this runtime's cap.")
    return number


def _resolve_runtime(runtime: Runtime | str | None, errors: _Errors) -> Runtime | None:
    if isinstance(runtime, Runtime):
        runtime = runtime.name
    if not runtime:
        errors.add("runtime", "Choose a runtime.")
        return None
    found = Runtime.objects.filter(name=runtime).first()
    if found is None:
        errors.add("runtime", f"Unknown runtime {runtime!r}.")
    elif not found.enabled:
        errors.add("runtime", f"Runtime {runtime!r} is disabled.")
        return None
    return found


def _clean_files(
    files: Sequence[Mapping[str, Any]] | None,
    source: str | bytes | None,
    runtime: Runtime | None,
    errors: _Errors,
) -> list[dict[str, str]]:
    main_name = runtime.file_name if runtime else "main"
    from_source = files is None and source is not None
    if files is None:
        files = [] if source is None else [{"name": main_name, "content": source}]
    elif source is not None:
        errors.add("source", "Give either source or files, not both.")
    if not files:
        errors.add("files", "Submit at least one source file.")
        return []
    if len(files) > execution_settings.MAX_FILES:
        errors.add("files", f"At most {execution_settings.MAX_FILES} files are allowed.")
        return []
    cleaned: list[dict[str, str]] = []
    total = 0
    for index, item in enumerate(files):
        path = f"files[{index}]"
        if not isinstance(item, Mapping):
            errors.add(path, "Must be an object with a name and content.")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not FILE_NAME.fullmatch(name) or name in {".", ".."}:
            errors.add(f"{path}.name", "Must be a plain file name (letters, digits, _ . -).")
            name = ""
        content = _clean_text(
            item.get("content", ""),
            "source" if from_source else f"{path}.content",
            execution_settings.MAX_SOURCE_BYTES,
            errors,
        )
        total += len(content.encode("utf-8", errors="surrogatepass"))
        cleaned.append({"name": name, "content": content})
    names = [item["name"] for item in cleaned if item["name"]]
    if len(set(names)) != len(names):
        errors.add("files", "File names must be unique.")
    if total > execution_settings.MAX_SOURCE_BYTES and not from_source:
        errors.add(
            "files",
            f"Source is {total} bytes in all; "
            f"the maximum is {execution_settings.MAX_SOURCE_BYTES}.",
        )
    if runtime and cleaned:
        main = next((item for item in cleaned if item["name"] == main_name), None)
        if main is None:
            errors.add("files", f"Include the main file {main_name!r}.")
        elif not main["content"].strip():
            field_path = "source" if from_source else f"files[{cleaned.index(main)}].content"
            errors.add(field_path, "Source is empty.")
        else:
            # The main file goes first so that it is the one runs and pages open with.
            cleaned.sort(key=lambda item: item["name"] != main_name)
    return cleaned


def _clean_test_cases(
    test_cases: Sequence[TestCaseInput | Mapping[str, Any]], errors: _Errors
) -> list[TestCaseInput]:
    if len(test_cases) > execution_settings.MAX_TEST_CASES:
        errors.add(
            "test_cases", f"At most {execution_settings.MAX_TEST_CASES} test cases are allowed."
        )
        return []
    cleaned = []
    for index, raw in enumerate(test_cases):
        path = f"test_cases[{index}]"
        case = raw if isinstance(raw, TestCaseInput) else None
        if case is None:
            if not isinstance(raw, Mapping):
                errors.add(path, "Must be an object.")
                continue
            unknown = set(raw) - set(TestCaseInput.__dataclass_fields__)
            if unknown:
                errors.add(path, f"Unknown fields: {', '.join(sorted(unknown))}.")
                continue
            case = TestCaseInput(**raw)
        stdin = _clean_text(case.stdin, f"{path}.stdin", execution_settings.MAX_STDIN_BYTES, errors)
        expected = _clean_text(
            case.expected_output,
            f"{path}.expected_output",
            execution_settings.MAX_EXPECTED_OUTPUT_BYTES,
            errors,
        )
        name = _clean_text(case.name, f"{path}.name", 100, errors)
        if case.comparison not in Comparison.values:
            errors.add(f"{path}.comparison", f"Must be one of {', '.join(Comparison.values)}.")
        try:
            tolerance = float(case.tolerance)
        except (TypeError, ValueError):
            tolerance = -1.0
        if not math.isfinite(tolerance) or tolerance < 0:
            errors.add(f"{path}.tolerance", "Must be a non-negative number.")
        if (
            isinstance(case.weight, bool)
            or not isinstance(case.weight, int)
            or not 1 <= case.weight <= MAX_WEIGHT
        ):
            errors.add(f"{path}.weight", f"Must be a whole number from 1 to {MAX_WEIGHT}.")
        if not isinstance(case.hidden, bool):
            errors.add(f"{path}.hidden", "Must be true or false.")
        cleaned.append(
            TestCaseInput(
                stdin=stdin,
                expected_output=expected,
                comparison=case.comparison,
                tolerance=tolerance,
                weight=case.weight,
                hidden=case.hidden,
                name=name,
            )
        )
    return cleaned


# Quotas ----------------------------------------------------------------------------------

QUOTA_WINDOW = timedelta(hours=24)
# A concurrent slot frees when a run ends; runs are short, so ask the client to retry soon.
CONCURRENT_RETRY_AFTER_S = 5


class QuotaExceeded(ValidationError):
    """A user's quota refuses another execution.

    Raised as a non-field error (``{"__all__": [message]}``) so forms and the API show it
    above the input. ``code`` is ``quota_concurrent`` or ``quota_per_day``; ``limit`` names the
    ``UserQuota`` field and ``value`` its effective value; ``retry_after_s`` estimates when a
    slot frees, or is None when none will (a limit of 0).
    """

    def __init__(
        self, message: str, *, code: str, limit: str, value: int, retry_after_s: int | None
    ) -> None:
        super().__init__({NON_FIELD_ERRORS: [ValidationError(message, code=code)]})
        self.code = code
        self.limit = limit
        self.value = value
        self.retry_after_s = retry_after_s


class QueueFull(ValidationError):
    """The platform's queue holds ``EXECUTIONS["MAX_QUEUE_DEPTH"]`` executions already.

    A non-field error like ``QuotaExceeded``, but about the whole platform rather than one
    user: the API answers it with 503. ``retry_after_s`` is a hint for when to try again.
    """

    def __init__(self, message: str, *, depth: int, retry_after_s: int) -> None:
        super().__init__({NON_FIELD_ERRORS: [ValidationError(message, code="queue_full")]})
        self.code = "queue_full"
        self.depth = depth
        self.retry_after_s = retry_after_s


def queue_depth_check(adding: int = 1) -> None:
    """Raise ``QueueFull`` if ``adding`` more queued executions would pass the global cap."""
    cap = execution_settings.MAX_QUEUE_DEPTH
    depth = Execution.objects.filter(status=Status.QUEUED).count()
    if depth + adding > cap:
        raise QueueFull(
            f"The platform is busy: {depth} executions are waiting (the limit is {cap}). "
            "Try again shortly.",
            depth=depth,
            retry_after_s=int(execution_settings.QUEUE_FULL_RETRY_AFTER_S),
        )


def _clean_callback_url(value: object, errors: _Errors) -> str:
    """An http(s) URL whose host, if it is an address, is one a delivery may reach (the
    delivery's own check, allow-list included). A host name is checked at each delivery:
    what it resolves to then is what counts."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        errors.add("callback_url", "Must be a URL.")
        return ""
    from django.core.validators import URLValidator

    from executions import webhooks

    try:
        # Before the syntax check, which refuses odd spellings of an address (2130706433,
        # 0x7f.1) too but would not say where they point.
        webhooks.check_literal_host(value)
    except webhooks.Refused as exc:
        errors.add("callback_url", str(exc))
        return ""
    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        errors.add("callback_url", "Must be an http:// or https:// URL.")
        return ""
    if len(value) > 2000:
        errors.add("callback_url", "Must be at most 2000 characters.")
    return value


def _quota_check(*, owner_id: int) -> None:
    """Raise ``QuotaExceeded`` if one more execution would break the quota of the user who
    owns the evaluation (whoever requests the run, it is their workload that grows).

    Call inside the transaction that creates the execution: the lock on the owner's row makes
    concurrent requests of one user take turns, so two of them cannot both pass the count.
    """
    User.objects.select_for_update().filter(pk=owner_id).first()
    queue_depth_check()
    quota = UserQuota.objects.filter(user_id=owner_id).first() or UserQuota(user_id=owner_id)
    theirs = Execution.objects.filter(evaluation__owner_id=owner_id)
    since = timezone.now() - QUOTA_WINDOW
    per_day = quota.effective_max_per_day
    today = theirs.filter(queued_at__gte=since).count()
    if today >= per_day:
        retry_after_s = None
        if per_day > 0:
            # The window frees a slot when the (today - per_day + 1)-th oldest run leaves it.
            freeing = (
                theirs.filter(queued_at__gte=since)
                .order_by("queued_at")
                .values_list("queued_at", flat=True)[today - per_day]
            )
            retry_after_s = max(1, math.ceil((freeing - since).total_seconds()))
        raise QuotaExceeded(
            f"Daily limit reached: at most {per_day} executions in 24 hours (max_per_day).",
            code="quota_per_day",
            limit="max_per_day",
            value=per_day,
            retry_after_s=retry_after_s,
        )
    concurrent = quota.effective_max_concurrent
    if theirs.filter(status__in=ACTIVE_STATUSES).count() >= concurrent:
        raise QuotaExceeded(
            f"Concurrency limit reached: at most {concurrent} executions queued or running "
            "at once (max_concurrent). Wait for one to finish or cancel one.",
            code="quota_concurrent",
            limit="max_concurrent",
            value=concurrent,
            retry_after_s=CONCURRENT_RETRY_AFTER_S if concurrent > 0 else None,
        )


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
        execution = _create_execution(evaluation, user=user, backend=active_selection().name)
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


def _create_execution(
    evaluation: Evaluation, *, user: User | AnonymousUser | None, backend: str
) -> Execution:
    """Add the next attempt and queue it once the surrounding transaction commits."""
    last = evaluation.executions.aggregate(last=Max("attempt"))["last"] or 0
    execution = Execution.objects.create(
        evaluation=evaluation,
        attempt=last + 1,
        requested_by=user if isinstance(user, User) else None,
        backend=backend,
        heartbeat_at=timezone.now(),
    )
    timeout = task_timeout_s(evaluation, backend=backend)
    transaction.on_commit(functools.partial(_enqueue, execution.pk, timeout))
    return execution


def start_allowance_s(backend: str) -> int:
    """What the backend called ``backend`` may need before a program starts (0 if unknown)."""
    try:
        return math.ceil(get_backend(backend or None).start_allowance_s)
    except Exception:  # an unusable backend fails the run itself, with its own message
        return 0


def task_timeout_s(evaluation: Evaluation, *, backend: str = "") -> int:
    """The task queue's timeout for one execution, from its runtime's maximum wall time and
    the start-up allowance of the backend that will run it."""
    runs = max(1, evaluation.test_cases.count())
    per_run = (
        math.ceil(evaluation.runtime.max_time_limit_ms / 1000)
        + RUN_OVERHEAD_S
        + start_allowance_s(backend)
    )
    return runs * per_run + execution_settings.REAPER_GRACE_S


def _enqueue(execution_id: int, timeout: int) -> None:
    from django_q.tasks import async_task

    async_task(
        "executions.tasks.run_execution",
        execution_id,
        task_name=f"execution-{execution_id}",
        timeout=timeout,
    )


def execution_rerun(*, user: User, evaluation: Evaluation, backend: str | None = None) -> Execution:
    """Queue a new attempt of ``evaluation``; earlier attempts are kept as they are.

    Raises ``ValidationError`` (``QuotaExceeded`` when the owner's quota is used up); in that
    case nothing is stored.
    """
    errors = _Errors()
    if not evaluation.runtime.enabled:
        errors.add("runtime", f"Runtime {evaluation.runtime.name!r} is disabled.")
    if backend:
        from executions.backends import backend_class

        try:
            backend_class(backend)
        except ImproperlyConfigured as exc:
            errors.add("backend", str(exc))
    errors.raise_if_any()
    with transaction.atomic():
        _quota_check(owner_id=evaluation.owner_id)
        Evaluation.objects.select_for_update().filter(pk=evaluation.pk).first()
        execution = _create_execution(
            evaluation, user=user, backend=backend or active_selection().name
        )
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


def _execution_ended(execution_id: int) -> None:
    """Called once per execution, right after the conditional update that ended it (any
    terminal state, whoever ended it). Queues the webhook, if the evaluation has one, after
    the surrounding transaction commits, so a slow receiver never holds up a worker."""
    from executions import webhooks

    transaction.on_commit(functools.partial(webhooks.execution_ended, execution_id))


def _cancel_sandbox(backend: str, handle: str) -> None:
    try:
        get_backend(backend).cancel(handle)
    except Exception:
        # The sandbox dies at its own deadline anyway; a failed kill must not fail the request.
        logger.exception("Could not cancel sandbox %s on backend %s", handle, backend)


# Webhook secrets and idempotency keys ----------------------------------------------------


def webhook_secret_for(user: User) -> str:
    """The user's webhook signing secret, created on first use."""
    import secrets

    found, _ = WebhookSecret.objects.get_or_create(
        user=user, defaults={"secret": secrets.token_urlsafe(32)}
    )
    return found.secret


def webhook_secret_rotate(user: User) -> str:
    """Replace the user's webhook secret with a new one and return it; the old one stops
    verifying at once."""
    import secrets

    secret = secrets.token_urlsafe(32)
    WebhookSecret.objects.update_or_create(user=user, defaults={"secret": secret})
    return secret


IDEMPOTENCY_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class IdempotencyClaim:
    """What ``idempotency_claim`` found: ``replay`` holds the stored (status, body) of an
    earlier identical request; ``conflict`` says why the key cannot be used; neither means
    the caller owns the key now and must call ``idempotency_store`` or
    ``idempotency_release``."""

    record_id: int | None = None
    replay: tuple[int, Any] | None = None
    conflict: str = ""
    in_progress: bool = False


def idempotency_claim(*, user: User, key: str, fingerprint: str) -> IdempotencyClaim:
    """Reserve ``key`` for this request, or report the earlier response or a conflict.

    Race-safe: the unique (user, key) constraint lets exactly one concurrent request create
    the record; the others read it. Keys older than 24 hours are forgotten.
    """
    from django.db import IntegrityError

    if not key or len(key) > 255:
        raise ValidationError({"Idempotency-Key": "Give 1 to 255 characters."})
    IdempotencyKey.objects.filter(
        user=user, key=key, created_at__lt=timezone.now() - IDEMPOTENCY_TTL
    ).delete()
    try:
        with transaction.atomic():
            record = IdempotencyKey.objects.create(user=user, key=key, fingerprint=fingerprint)
        return IdempotencyClaim(record_id=record.pk)
    except IntegrityError:
        pass
    existing = IdempotencyKey.objects.filter(user=user, key=key).first()
    if existing is None:  # expired and deleted by a concurrent request in between
        return IdempotencyClaim(conflict="Idempotency-Key was just reused; retry the request.")
    if existing.fingerprint != fingerprint:
        return IdempotencyClaim(
            conflict="This Idempotency-Key was already used for a different request "
            "(another path or body). Use a new key for a new request."
        )
    if existing.status_code is None:
        return IdempotencyClaim(
            conflict="A request with this Idempotency-Key is still being handled; "
            "retry when it has finished.",
            in_progress=True,
        )
    return IdempotencyClaim(replay=(existing.status_code, existing.response))


def idempotency_store(record_id: int, status_code: int, response: Any) -> None:
    IdempotencyKey.objects.filter(pk=record_id).update(status_code=status_code, response=response)


def idempotency_release(record_id: int) -> None:
    """Forget a claimed key whose request should be retried for real (e.g. refused by
    back-pressure, or failed inside the platform)."""
    IdempotencyKey.objects.filter(pk=record_id, status_code__isnull=True).delete()


# Running ---------------------------------------------------------------------------------


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def execution_claim(execution_id: int) -> Execution | None:
    """Move a queued execution to running for this worker, or return None if another
    delivery of the task, a cancel or the reaper got there first."""
    execution = (
        Execution.objects.select_related("evaluation__runtime").filter(pk=execution_id).first()
    )
    if execution is None or execution.status != Status.QUEUED:
        return None
    now = timezone.now()
    runs = max(1, execution.evaluation.test_cases.count())
    per_run_s = (
        execution.evaluation.time_limit_ms / 1000
        + RUN_OVERHEAD_S
        + start_allowance_s(execution.backend)
    )
    claimed = Execution.objects.filter(pk=execution_id, status=Status.QUEUED).update(
        status=Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        deadline_at=now + timedelta(seconds=runs * per_run_s),
        worker=worker_identity(),
    )
    if not claimed:
        return None
    execution.refresh_from_db()
    return execution


def execution_run(execution_id: int) -> None:
    """Claim an execution and run it to a terminal state. Safe to call twice."""
    execution = execution_claim(execution_id)
    if execution is None:
        logger.info("Execution %s was already claimed or ended; skipping.", execution_id)
        return
    try:
        with _heartbeat(execution.pk):
            _run_claimed(execution)
    except Exception as exc:
        logger.exception("Execution %s failed inside the platform", execution.pk)
        _finish_error(
            execution, ErrorKind.BACKEND_ERROR, f"The platform failed while running this: {exc}"
        )


def _run_claimed(execution: Execution) -> None:
    evaluation = execution.evaluation
    try:
        backend = get_backend(execution.backend)
    except ImproperlyConfigured as exc:
        _fail_on_backend(execution, ErrorKind.BACKEND_ERROR, str(exc))
        return
    policy = sandbox_policy(evaluation.runtime, evaluation)
    files = {item["name"]: item["content"].encode() for item in evaluation.files}
    cases = list(evaluation.test_cases.all())
    runs: list[tuple[TestCase | None, bytes]] = (
        [(case, case.stdin.encode()) for case in cases]
        if cases
        else [(None, evaluation.stdin.encode())]
    )
    scored: list[judging.Scored] = []
    deciding: tuple[RunResult, Verdict] | None = None
    # Execution ids start again when a database is recreated, and several platforms may share
    # one engine or cluster: the nonce keeps a sandbox's name from colliding with one that
    # another platform, or a crashed run of a former database, left behind.
    nonce = secrets.token_hex(3)
    for index, (case, stdin) in enumerate(runs):
        handle = f"evalplatform-{execution.pk}-{index}-{nonce}"
        if not Execution.objects.filter(pk=execution.pk, status=Status.RUNNING).update(
            backend_handle=handle
        ):
            return  # cancelled or reaped between runs; whoever ended it recorded why
        request = RunRequest(
            execution_id=execution.pk,
            handle=handle,
            image=evaluation.runtime.image,
            command=list(evaluation.runtime.command),
            files=files,
            stdin=stdin,
            policy=policy,
            labels={"evalplatform.evaluation": str(evaluation.pk)},
        )
        result = _run_on_backend(backend, request)
        if result.error_kind == ErrorKind.REFUSED:
            _finish(
                execution, Status.REFUSED, _summary(result, cases), error_kind=result.error_kind
            )
            return
        if result.error_kind is not None:
            _fail_on_backend(
                execution, result.error_kind, result.error_message, _summary(result, cases)
            )
            return
        if case is None:
            verdict = judging.run_verdict(result)
        else:
            verdict = judging.case_verdict(
                result,
                expected=case.expected_output,
                comparison=case.comparison,
                tolerance=case.tolerance,
            )
            TestResult.objects.create(
                execution=execution, test_case=case, verdict=verdict, **_outcome(result)
            )
            scored.append(judging.Scored(verdict, case.weight))
        if deciding is None or deciding[1] == Verdict.ACCEPTED:
            deciding = (result, verdict)
    assert deciding is not None
    result, verdict = deciding
    score = judging.overall(scored)[1] if scored else None
    overall_verdict = judging.overall(scored)[0] if scored else verdict
    _finish(
        execution, Status.FINISHED, _summary(result, cases), verdict=overall_verdict, score=score
    )


def _summary(result: RunResult, cases: Sequence[TestCase]) -> RunResult:
    """What the execution row keeps of its deciding run. With test cases the output lives in
    each case's result, where a hidden case's is withheld from non-staff; copying it onto the
    execution would show it to them."""
    if not cases:
        return result
    return replace(result, stdout=b"", stderr=b"", stdout_truncated=False, stderr_truncated=False)


def _fail_on_backend(
    execution: Execution, kind: ErrorKind | str, message: str, result: RunResult | None = None
) -> None:
    """End a running execution in infrastructure error because its backend failed, and log it
    once, naming the execution, the backend and the reason; unless a cancel or the reaper
    ended it first, which then recorded why."""
    if _finish_error(execution, kind, message, result):
        logger.warning(
            "Execution %s failed on backend %s (%s): %s",
            execution.pk,
            execution.backend,
            kind,
            message,
        )


def _run_on_backend(backend: Any, request: RunRequest) -> RunResult:
    try:
        return backend.run(request)
    except Exception as exc:
        # The contract says run() does not raise; a backend that does is still contained.
        logger.exception("Backend %s raised while running %s", backend.name, request.handle)
        return RunResult.failure(
            ErrorKind.BACKEND_ERROR, f"{type(exc).__name__}: {exc}", handle=request.handle
        )


def sandbox_policy(runtime: Runtime, evaluation: Evaluation) -> SandboxPolicy:
    limits = Limits(
        wall_time_ms=evaluation.time_limit_ms,
        memory_mb=evaluation.memory_mb,
        output_bytes=evaluation.output_kb * 1024,
        cpus=float(runtime.cpus),
        pids=runtime.pids_limit,
        scratch_mb=runtime.scratch_mb,
    )
    return SandboxPolicy(limits=limits, network=runtime.network_enabled)


def _outcome(result: RunResult) -> dict[str, Any]:
    return {
        "exit_code": result.exit_code,
        "signal": result.signal,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "wall_time_ms": result.wall_time_ms,
        "peak_memory_kb": None
        if result.peak_memory_bytes is None
        else result.peak_memory_bytes // 1024,
    }


def _finish(
    execution: Execution,
    status: Status,
    result: RunResult | None,
    *,
    verdict: Verdict | str = "",
    score: Any = None,
    error_kind: str = "",
    error_message: str = "",
    from_status: Status = Status.RUNNING,
) -> bool:
    """End an execution that is still ``from_status``, once. Returns False if something else
    ended it first."""
    outcome = _outcome(result) if result is not None else {}
    if result is not None and not error_message:
        error_message = result.error_message
    ended = Execution.objects.filter(pk=execution.pk, status=from_status).update(
        status=status,
        verdict=verdict,
        score=score,
        finished_at=timezone.now(),
        error_kind=error_kind,
        error_message=error_message,
        **outcome,
    )
    if not ended:
        logger.info("Execution %s had already ended; its late result is discarded.", execution.pk)
        return False
    _execution_ended(execution.pk)
    return True


def _finish_error(
    execution: Execution,
    kind: ErrorKind | str,
    message: str,
    result: RunResult | None = None,
    *,
    from_status: Status = Status.RUNNING,
) -> bool:
    return _finish(
        execution,
        Status.ERROR,
        result,
        verdict=Verdict.INTERNAL_ERROR,
        error_kind=kind,
        error_message=message,
        from_status=from_status,
    )


@contextlib.contextmanager
def _heartbeat(execution_id: int) -> Iterator[None]:
    """Mark the execution alive every few seconds from a thread, so the reaper can tell a
    slow run from a dead worker."""
    stop = threading.Event()
    interval = execution_settings.HEARTBEAT_INTERVAL_S

    def beat() -> None:
        try:
            while not stop.wait(interval):
                Execution.objects.filter(pk=execution_id, status=Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:
            logger.exception("Heartbeat for execution %s stopped", execution_id)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{execution_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# Runtime images --------------------------------------------------------------------------


class RuntimeImageBuildFailed(Exception):
    """A runtime image could not be built; the message names it and says why."""


def runtime_images_build(
    *,
    images: Sequence[str] | None = None,
    mode: str = "auto",
    force: bool = False,
    log: Callable[[str], None] = logger.info,
) -> list[Any]:
    """Make sure the Docker image of each enabled runtime (or each of ``images``) exists.

    Returns what was done per image; raises ``RuntimeImageBuildFailed``.
    """
    from executions.runtime_images import RuntimeImageError, ensure_runtime_image

    runtimes = Runtime.objects.filter(enabled=True)
    if images:
        runtimes = Runtime.objects.filter(image__in=images)
        unknown = set(images) - set(runtimes.values_list("image", flat=True))
        if unknown:
            raise RuntimeImageBuildFailed(
                f"No runtime uses the image(s) {', '.join(sorted(unknown))}."
            )
    outcomes = []
    seen: set[str] = set()
    for runtime in runtimes.order_by("image"):
        if runtime.image in seen:
            continue
        seen.add(runtime.image)
        try:
            outcomes.append(
                ensure_runtime_image(
                    runtime.image, runtime=runtime.language, mode=mode, force=force, log=log
                )
            )
        except RuntimeImageError as exc:
            raise RuntimeImageBuildFailed(
                f"{runtime.image} (runtime {runtime.name}): {exc}"
            ) from exc
    return outcomes


# Reaping ---------------------------------------------------------------------------------


def orphan_age_s() -> int:
    """Older than any run can be: a sandbox this old was left behind by a dead worker."""
    return (
        execution_settings.HARD_MAX_WALL_TIME_MS // 1000
        + RUN_OVERHEAD_S
        + start_allowance_s("")
        + ORPHAN_SLOT_WAIT_S
        + execution_settings.REAPER_GRACE_S
    )


def sandboxes_janitor() -> int:
    """Remove sandboxes that crashed workers left on the active backend. Never raises."""
    try:
        return get_backend().remove_orphans(orphan_age_s())
    except Exception:
        logger.exception("Could not remove orphaned sandboxes")
        return 0


@dataclass(frozen=True)
class ReapReport:
    closed: int
    requeued: int
    orphans_removed: int = 0


def _reap(execution: Execution, reason: str, *, from_status: Status) -> bool:
    """Close an abandoned execution as an infrastructure error, and record that."""
    if not _finish_error(execution, ErrorKind.WORKER_LOST, reason, from_status=from_status):
        return False
    AuditEvent.objects.create(
        action=AuditEvent.Action.REAP,
        evaluation_id=execution.evaluation_id,
        execution=execution,
        detail={"reason": reason},
    )
    return True


def executions_reap() -> ReapReport:
    """Close running executions whose worker is gone or whose deadline has long passed, and
    re-queue (once) queued executions that no worker picked up; close those after that."""
    now = timezone.now()
    grace = timedelta(seconds=execution_settings.REAPER_GRACE_S)
    stale = now - timedelta(seconds=execution_settings.HEARTBEAT_TIMEOUT_S)
    closed = 0
    lost = Execution.objects.filter(status=Status.RUNNING).filter(
        Q(heartbeat_at__lt=stale) | Q(deadline_at__lt=now - grace)
    )
    for execution in lost:
        reason = (
            "The worker running this stopped responding (no heartbeat since "
            f"{execution.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); the run was abandoned."
            if execution.heartbeat_at and execution.heartbeat_at < stale
            else "The run went past its deadline and was abandoned."
        )
        if _reap(execution, reason, from_status=Status.RUNNING):
            closed += 1
            if execution.backend_handle:
                _cancel_sandbox(execution.backend, execution.backend_handle)

    requeued = 0
    stalled = Execution.objects.filter(
        status=Status.QUEUED,
        heartbeat_at__lt=now - timedelta(seconds=execution_settings.QUEUED_STALL_S),
    ).select_related("evaluation__runtime")
    for execution in stalled:
        if execution.requeue_count < execution_settings.MAX_REQUEUES:
            with transaction.atomic():
                touched = Execution.objects.filter(
                    pk=execution.pk, status=Status.QUEUED, requeue_count=execution.requeue_count
                ).update(requeue_count=execution.requeue_count + 1, heartbeat_at=now)
                if touched:
                    requeued += 1
                    AuditEvent.objects.create(
                        action=AuditEvent.Action.REQUEUE,
                        evaluation_id=execution.evaluation_id,
                        execution=execution,
                    )
                    timeout = task_timeout_s(execution.evaluation, backend=execution.backend)
                    transaction.on_commit(functools.partial(_enqueue, execution.pk, timeout))
            continue
        reason = (
            "No worker picked this run up; "
            "check that the task cluster (manage.py qcluster) is running."
        )
        if _reap(execution, reason, from_status=Status.QUEUED):
            closed += 1
    return ReapReport(closed=closed, requeued=requeued, orphans_removed=sandboxes_janitor())
