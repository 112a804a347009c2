"""Runtimes, evaluations and their executions, per-test results, and the audit trail."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.urls import reverse

from executions.conf import execution_settings


class SelfTestStatus(models.TextChoices):
    UNTESTED = "untested", "Not self-tested"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"


class Runtime(models.Model):
    """An entry in the admin's catalogue: which image runs code, how, and within what caps.

    Submitters pick a runtime by name; they never choose the image, the commands (to compile
    and to run) or the working directory (security invariant 5).
    """

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(
                r"^[a-z0-9][a-z0-9._-]*$",
                "Use lowercase letters, digits, dots, hyphens and underscores.",
            )
        ],
        help_text="What submitters and the API pick, e.g. python-3.11.",
    )
    display_name = models.CharField(max_length=100)
    language = models.CharField(
        max_length=32,
        default="Python",
        help_text="The language, as the runtime picker groups it, e.g. C++.",
    )
    version = models.CharField(
        max_length=100,
        blank=True,
        help_text="What tells this runtime from the language's others, e.g. C++17, GCC 12.",
    )
    editor_mode = models.CharField(
        max_length=64,
        blank=True,
        default="text/x-python",
        help_text="The code editor's highlighting mode (a MIME type), e.g. text/x-c++src; "
        "empty: plain text.",
    )
    hello_world = models.TextField(
        blank=True, help_text="The code the editor starts from when this runtime is picked."
    )
    image = models.CharField(
        max_length=255, help_text="Container image, e.g. evalplatform/python:3.11"
    )
    command = models.JSONField(
        help_text='The command line as a JSON list, e.g. ["python3", "main.py"].'
    )
    compile_command = models.JSONField(
        default=list,
        blank=True,
        help_text="Run once before the test cases, in a writable copy of the code, as a JSON "
        'list, e.g. ["gcc", "-O2", "-o", "main", "main.c"]; what it leaves there is the code '
        "every case runs. [] (or empty): no compile step.",
    )
    file_name = models.CharField(
        max_length=100, default="main.py", help_text="Name of the submitted main file."
    )
    default_time_limit_ms = models.PositiveIntegerField(default=5_000)
    max_time_limit_ms = models.PositiveIntegerField(default=10_000)
    default_memory_mb = models.PositiveIntegerField(default=256)
    max_memory_mb = models.PositiveIntegerField(default=512)
    default_output_kb = models.PositiveIntegerField(default=64)
    max_output_kb = models.PositiveIntegerField(default=1024)
    compile_time_limit_ms = models.PositiveIntegerField(
        default=10_000,
        validators=[MinValueValidator(1)],
        help_text="Wall time of the compile step; used only with a compile command.",
    )
    compile_memory_mb = models.PositiveIntegerField(
        default=512,
        validators=[MinValueValidator(1)],
        help_text="Memory of the compile step; used only with a compile command.",
    )
    cpus = models.DecimalField(
        max_digits=4,
        decimal_places=2,
        default=Decimal("1.00"),
        validators=[MinValueValidator(Decimal("0.1"))],
    )
    pids_limit = models.PositiveIntegerField(default=64)
    open_files_limit = models.PositiveIntegerField(
        default=64,
        validators=[MinValueValidator(16)],
        help_text="Files a program may hold open at once.",
    )
    scratch_mb = models.PositiveIntegerField(default=16)
    network_enabled = models.BooleanField(
        default=False,
        help_text="Lets sandboxes of this runtime reach the network. Leave off unless you must.",
    )
    enabled = models.BooleanField(default=True)
    self_test_status = models.CharField(
        max_length=16,
        choices=SelfTestStatus.choices,
        default=SelfTestStatus.UNTESTED,
        help_text="How the catalogue's self-test of this runtime last ended; a runtime that "
        "failed it is not offered to evaluators.",
    )
    self_test_detail = models.TextField(blank=True)
    self_tested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["language", "display_name"]

    def __str__(self) -> str:
        return self.display_name

    @property
    def offered(self) -> bool:
        """Whether evaluators may pick it: enabled, and not failing its self-test."""
        return self.enabled and self.self_test_status != SelfTestStatus.FAILED

    @property
    def compiles(self) -> bool:
        """Whether each execution of this runtime starts with a compile step."""
        return bool(self.compile_command)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if not _is_command(self.command):
            errors["command"] = "Enter a non-empty JSON list of strings."
        if self.compile_command is None:
            self.compile_command = []  # the admin's empty field: no compile step
        if not (self.compile_command == [] or _is_command(self.compile_command)):
            errors["compile_command"] = (
                "The compile command must be a JSON list of non-empty strings, "
                "or [] for no compile step."
            )
        if "/" in self.file_name or self.file_name in {"", ".", ".."}:
            errors["file_name"] = "Enter a plain file name without directories."
        hard = {
            "max_time_limit_ms": execution_settings.HARD_MAX_WALL_TIME_MS,
            "max_memory_mb": execution_settings.HARD_MAX_MEMORY_MB,
            "max_output_kb": execution_settings.HARD_MAX_OUTPUT_KB,
            "compile_time_limit_ms": execution_settings.HARD_MAX_WALL_TIME_MS,
            "compile_memory_mb": execution_settings.HARD_MAX_MEMORY_MB,
        }
        for field, maximum in hard.items():
            if getattr(self, field) > maximum:
                errors[field] = f"The platform's hard maximum is {maximum}."
        pairs = [
            ("default_time_limit_ms", "max_time_limit_ms"),
            ("default_memory_mb", "max_memory_mb"),
            ("default_output_kb", "max_output_kb"),
        ]
        for default, maximum in pairs:
            if getattr(self, default) > getattr(self, maximum):
                errors[default] = "The default cannot exceed the maximum."
        if errors:
            raise ValidationError(errors)


def _is_command(value: object) -> bool:
    """A command line: a non-empty list of non-empty strings."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(part, str) and part for part in value)
    )


class Evaluation(models.Model):
    """What an evaluator submitted: source files, runtime, input or test cases, limits."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="evaluations"
    )
    title = models.CharField(max_length=200, blank=True)
    runtime = models.ForeignKey(Runtime, on_delete=models.PROTECT, related_name="evaluations")
    files = models.JSONField(help_text="List of {name, content}; the first is the main file.")
    stdin = models.TextField(blank=True)
    time_limit_ms = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    output_kb = models.PositiveIntegerField()
    callback_url = models.URLField(
        max_length=2000,
        blank=True,
        help_text="Receives a signed POST whenever one of this evaluation's executions ends.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title or f"Evaluation {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("executions:evaluation-detail", args=[self.pk])


class Comparison(models.TextChoices):
    EXACT = "exact", "Exact"
    TRAILING_WHITESPACE = "trailing_ws", "Ignore trailing whitespace"
    NUMERIC = "numeric", "Numeric with tolerance"


class TestCase(models.Model):
    """One input with its expected output. Each runs as a fresh process of its execution's
    session, which nothing of another case reaches; the expected output never leaves the
    platform."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="test_cases")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=100, blank=True)
    stdin = models.TextField(blank=True)
    expected_output = models.TextField(blank=True)
    comparison = models.CharField(
        max_length=16, choices=Comparison.choices, default=Comparison.TRAILING_WHITESPACE
    )
    tolerance = models.FloatField(default=1e-6)
    weight = models.PositiveIntegerField(default=1)
    hidden = models.BooleanField(default=False)

    class Meta:
        ordering = ["evaluation", "position"]
        constraints = [
            models.UniqueConstraint(fields=["evaluation", "position"], name="unique_case_position")
        ]

    def __str__(self) -> str:
        return self.name or f"Test {self.position + 1}"


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    CANCELLED = "cancelled", "Cancelled"
    REFUSED = "refused", "Refused"
    ERROR = "error", "Infrastructure error"


ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)


class Verdict(models.TextChoices):
    ACCEPTED = "accepted", "Accepted"
    WRONG_ANSWER = "wrong_answer", "Wrong answer"
    TIME_LIMIT = "time_limit", "Time limit exceeded"
    MEMORY_LIMIT = "memory_limit", "Memory limit exceeded"
    OUTPUT_LIMIT = "output_limit", "Output limit exceeded"
    RUNTIME_ERROR = "runtime_error", "Runtime error"
    COMPILATION_ERROR = "compilation_error", "Compilation error"
    INTERNAL_ERROR = "internal_error", "Internal error"


class CompileStatus(models.TextChoices):
    """How an execution's compile step ended. Anything but ``compiled`` is a compilation
    error, and says why."""

    COMPILED = "compiled", "Compiled"
    FAILED = "failed", "The compiler failed"
    TIME_LIMIT = "time_limit", "Time limit exceeded"
    MEMORY_LIMIT = "memory_limit", "Memory limit exceeded"
    OUTPUT_LIMIT = "output_limit", "Output limit exceeded"


class RunOutcome(models.Model):
    """What one sandbox run produced. Output is stored as raw bytes: it may hold anything."""

    verdict = models.CharField(max_length=32, choices=Verdict.choices, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    signal = models.IntegerField(null=True, blank=True)
    stdout = models.BinaryField(default=b"")
    stderr = models.BinaryField(default=b"")
    stdout_truncated = models.BooleanField(default=False)
    stderr_truncated = models.BooleanField(default=False)
    wall_time_ms = models.PositiveIntegerField(null=True, blank=True)
    peak_memory_kb = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def stdout_text(self) -> str:
        return display_text(self.stdout)

    @property
    def stderr_text(self) -> str:
        return display_text(self.stderr)


def display_text(data: bytes | memoryview) -> str:
    """Program output as text that any page or database can hold.

    Invalid UTF-8 becomes U+FFFD and NUL becomes the visible U+2400 symbol.
    """
    return bytes(data).decode("utf-8", errors="replace").replace("\x00", "\u2400")


class Execution(RunOutcome):
    """One attempt to run an evaluation on one backend. Re-runs add executions."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="executions")
    attempt = models.PositiveIntegerField()
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    backend = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    score = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=128, blank=True)
    backend_handle = models.CharField(max_length=255, blank=True)
    # When its task was last handed to the broker; null while it waits to be (the broker was
    # down). The database says what must run: the recovery lane sends what was never sent
    # and sends again what the broker lost.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    requeue_count = models.PositiveIntegerField(default=0)
    # An attempt the platform started itself because the one before it was interrupted by
    # the infrastructure, and how many such attempts came before it in a row.
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries"
    )
    retry_count = models.PositiveSmallIntegerField(default=0)
    error_kind = models.CharField(max_length=32, blank=True)
    error_message = models.TextField(blank=True)
    # The compile step, once it ran (``compile_status`` is blank when the runtime does not
    # compile, before the step ends, and when the infrastructure failed during it). Its
    # output is the compiler's, not a test case's: the submitter always sees it.
    compile_status = models.CharField(max_length=16, choices=CompileStatus.choices, blank=True)
    compile_exit_code = models.IntegerField(null=True, blank=True)
    compile_signal = models.IntegerField(null=True, blank=True)
    compile_output = models.BinaryField(default=b"", help_text="Its stdout, then its stderr.")
    compile_output_truncated = models.BooleanField(default=False)
    compile_time_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-queued_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["evaluation", "attempt"], name="unique_attempt")
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"Execution {self.pk} (attempt {self.attempt}) of evaluation {self.evaluation_id}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def compile_output_text(self) -> str:
        return display_text(self.compile_output)


class TestResult(RunOutcome):
    """The outcome of one test case in one execution."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="results")
    test_case = models.ForeignKey(TestCase, on_delete=models.CASCADE, related_name="results")

    class Meta:
        ordering = ["execution", "test_case__position"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "test_case"], name="unique_case_result")
        ]

    def __str__(self) -> str:
        return f"{self.test_case} in execution {self.execution_id}"


class AuditEvent(models.Model):
    """Who did what to which evaluation. Written by services, never edited."""

    class Action(models.TextChoices):
        SUBMIT = "submit", "Submitted"
        CANCEL = "cancel", "Cancelled"
        RERUN = "rerun", "Re-ran"
        REAP = "reap", "Closed by the reaper"
        REQUEUE = "requeue", "Re-queued by the reaper"
        RETRY = "retry", "Re-ran after an infrastructure failure"
        RELEASE = "release", "Returned to the queue before it started"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    evaluation = models.ForeignKey(
        Evaluation, on_delete=models.CASCADE, related_name="audit_events"
    )
    execution = models.ForeignKey(
        Execution, on_delete=models.CASCADE, null=True, blank=True, related_name="audit_events"
    )
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        actor = self.actor or "system"
        return f"{actor} {self.get_action_display().lower()} evaluation {self.evaluation_id}"


class UserQuota(models.Model):
    """Per-user limits on executions. An empty limit means the platform default
    (``EXECUTIONS["QUOTA_MAX_CONCURRENT"]`` and ``["QUOTA_MAX_PER_DAY"]``); 0 blocks."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="execution_quota"
    )
    max_concurrent = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Executions of this user's evaluations queued or running at once. "
        "Empty: the platform default.",
    )
    max_per_day = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Executions of this user's evaluations requested in any 24 hours. "
        "Empty: the platform default.",
    )

    class Meta:
        verbose_name = "user quota"

    def __str__(self) -> str:
        return f"Quota of {self.user}"

    @property
    def effective_max_concurrent(self) -> int:
        if self.max_concurrent is None:
            return int(execution_settings.QUOTA_MAX_CONCURRENT)
        return self.max_concurrent

    @property
    def effective_max_per_day(self) -> int:
        if self.max_per_day is None:
            return int(execution_settings.QUOTA_MAX_PER_DAY)
        return self.max_per_day


class WebhookSecret(models.Model):
    """The key a user's webhook deliveries are signed with (HMAC-SHA256). Created on first
    use; rotating it (admin, or the API) invalidates the old one at once."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret"
    )
    secret = models.CharField(max_length=128)
    rotated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "webhook secret"

    def __str__(self) -> str:
        return f"Webhook secret of {self.user}"


class WebhookDelivery(models.Model):
    """One attempt to POST an execution's ending to its evaluation's callback URL."""

    execution = models.ForeignKey(
        Execution, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    url = models.CharField(max_length=2000)
    attempt = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    succeeded = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    next_retry_at = models.DateTimeField(
        null=True, blank=True, help_text="When the next attempt is due; empty when none will be."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["execution", "attempt"], name="unique_webhook_attempt")
        ]

    def __str__(self) -> str:
        return f"Webhook for execution {self.execution_id}, attempt {self.attempt}"


class IdempotencyKey(models.Model):
    """The first response to a POST made with an ``Idempotency-Key`` header, replayed to
    retries of the same request by the same user. ``status_code`` is null while the first
    request is still being handled."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body.")
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="unique_idempotency_key")
        ]

    def __str__(self) -> str:
        return f"Idempotency key {self.key!r} of user {self.user_id}"


class ClusterBeat(models.Model):
    """The last tick of one cluster's recovery lane (``executions.recovery``): which worker
    clusters are alive, told by the database whatever the broker (django-q2's own status may
    live in a cache only its processes see)."""

    name = models.CharField(max_length=160, unique=True, help_text="host:pid of the cluster")
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-beat_at"]

    def __str__(self) -> str:
        return self.name
