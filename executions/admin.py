"""Django admin, the operator's console: runtimes and user quotas are managed here; run records
are read-only, changed only by actions that call services (and so are audited); backend health
has a page of its own at ``/admin/executions/backend-health/``, and the operations dashboard at
``/admin/executions/operations/``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from executions import catalogue, operations, selectors, services
from executions.models import (
    AuditEvent,
    Evaluation,
    Execution,
    Runtime,
    Status,
    TestCase,
    TestResult,
    UserQuota,
    Verdict,
    WebhookDelivery,
    WebhookSecret,
)

logger = logging.getLogger(__name__)

STATUS_COLOURS = {
    Status.QUEUED: "#6c757d",
    Status.RUNNING: "#0b5ed7",
    Status.FINISHED: "#146c43",
    Status.CANCELLED: "#6c757d",
    Status.REFUSED: "#a04900",
    Status.ERROR: "#b02a37",
}
VERDICT_COLOURS = {
    Verdict.ACCEPTED: "#146c43",
    Verdict.WRONG_ANSWER: "#b02a37",
    Verdict.TIME_LIMIT: "#a04900",
    Verdict.MEMORY_LIMIT: "#a04900",
    Verdict.OUTPUT_LIMIT: "#a04900",
    Verdict.RUNTIME_ERROR: "#b02a37",
    Verdict.COMPILATION_ERROR: "#b02a37",
    Verdict.INTERNAL_ERROR: "#6f42c1",
}
UNKNOWN_COLOUR = "#495057"
# An execution's raw output: shown as text (escaped) on its own page, never loaded for lists.
OUTPUT_FIELDS = ("stdout", "stderr", "compile_output")

# The admin's own stylesheet (run lists that fit a 1280 px screen, source files as code,
# re-run targets); the evaluator pages' static/css/app.css is not loaded in admin.
ADMIN_CSS = {"all": ("css/admin.css",)}


def badge(value: str, label: str, colours: dict[Any, str]) -> SafeString:
    """A coloured label; ``value`` and ``label`` are escaped. Whether it may wrap is left to
    static/css/admin.css: it does in the execution list, so that the list fits the screen."""
    return format_html(
        '<span class="badge badge-{}" style="color:#fff;background:{};padding:1px 6px;'
        'border-radius:3px">{}</span>',
        value,
        colours.get(value, UNKNOWN_COLOUR),
        label,
    )


def status_badge(execution: Execution) -> SafeString:
    return badge(execution.status, execution.get_status_display(), STATUS_COLOURS)


def verdict_badge(outcome: Execution | TestResult) -> SafeString | str:
    if not outcome.verdict:
        return ""
    return badge(outcome.verdict, outcome.get_verdict_display(), VERDICT_COLOURS)


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def execution_duration(execution: Execution) -> str | None:
    """Finished minus started, "running for …" while it runs, None before it starts."""
    if execution.started_at is None:
        return None
    if execution.finished_at is not None:
        elapsed: timedelta = execution.finished_at - execution.started_at
        return format_seconds(max(0.0, elapsed.total_seconds()))
    if execution.status == Status.RUNNING:
        elapsed = timezone.now() - execution.started_at
        return f"running for {format_seconds(max(0.0, elapsed.total_seconds()))}"
    return None


class ReadOnlyAdminMixin:
    """History written by the platform: viewable, never added, edited or deleted by hand (so
    neither the ``delete_selected`` action nor a delete button is offered, and the delete
    view answers 403). Every change to it goes through a service and is audited."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Runtime)
class RuntimeAdmin(admin.ModelAdmin):
    list_display = (
        "display_name",
        "name",
        "image",
        "compiles",
        "max_time_limit_ms",
        "max_memory_mb",
        "network_enabled",
        "enabled",
        "self_test_status",
    )
    list_filter = ("enabled", "self_test_status", "network_enabled", "language")
    search_fields = ("name", "display_name", "image", "language")
    readonly_fields = ("self_test_status", "self_test_detail", "self_tested_at")
    actions = ["self_test"]

    @admin.action(description="Run the catalogue's self-test of the selected runtimes")
    def self_test(self, request: HttpRequest, queryset: QuerySet[Runtime]) -> None:
        for runtime in queryset:
            entry = catalogue.ENTRY_BY_NAME.get(runtime.name)
            if entry is None:
                self.message_user(
                    request,
                    f"{runtime.name}: not in the catalogue, so it has no self-test.",
                    messages.WARNING,
                )
                continue
            outcome = services.runtime_self_test(runtime, entry)
            self.message_user(
                request,
                f"{runtime.name}: {'passed' if outcome.passed else 'FAILED'}. {outcome.detail}",
                messages.SUCCESS if outcome.passed else messages.ERROR,
            )

    @admin.display(description="compiles", boolean=True)
    def compiles(self, runtime: Runtime) -> bool:
        return runtime.compiles


class TestCaseInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = TestCase
    extra = 0
    can_delete = False
    fields = ("position", "name", "comparison", "weight", "hidden", "stdin", "expected_output")
    readonly_fields = fields


class ExecutionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Execution
    extra = 0
    can_delete = False
    show_change_link = True
    fields = (
        "attempt",
        "backend",
        "status_",
        "verdict_",
        "score",
        "results_",
        "duration",
        "requested_by",
        "queued_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        # Output blobs stay in the database; results come in one query for all attempts.
        results = TestResult.objects.select_related("test_case").defer("stdout", "stderr")
        return (
            super()
            .get_queryset(request)
            .select_related("requested_by")
            .defer(*OUTPUT_FIELDS)
            .prefetch_related(Prefetch("results", queryset=results))
        )

    @admin.display(description="status")
    def status_(self, execution: Execution) -> SafeString:
        return status_badge(execution)

    @admin.display(description="verdict")
    def verdict_(self, execution: Execution) -> SafeString | str:
        return verdict_badge(execution)

    @admin.display(description="results per test case")
    def results_(self, execution: Execution) -> SafeString:
        return format_html_join(
            " ",
            '<span title="{}">{}</span>',
            ((str(result.test_case), verdict_badge(result)) for result in execution.results.all()),
        )

    @admin.display
    def duration(self, execution: Execution) -> str:
        return execution_duration(execution) or self.get_empty_value_display()


@admin.action(description="Re-run selected evaluations")
def rerun_evaluations(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Evaluation]
) -> None:
    for evaluation in queryset.select_related("runtime"):
        try:
            services.execution_rerun(user=request.user, evaluation=evaluation)  # type: ignore[arg-type]
        except ValidationError as exc:
            modeladmin.message_user(
                request, f"{evaluation}: {'; '.join(exc.messages)}", messages.ERROR
            )
        else:
            modeladmin.message_user(request, f"{evaluation}: re-run queued.")


class BackendSelect(forms.RadioSelect):
    """One radio per re-run target, its health beside it; an unhealthy one cannot be chosen."""

    def __init__(self, targets: list[selectors.RerunTarget]) -> None:
        super().__init__()
        self.unhealthy = {target.name for target in targets if not target.healthy}

    def create_option(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(*args, **kwargs)
        if option["value"] in self.unhealthy:
            option["attrs"]["disabled"] = True
        return option


def rerun_target_label(target: selectors.RerunTarget) -> str:
    name = f"{target.name} (active)" if target.active else target.name
    state = "healthy" if target.healthy else "not healthy"
    return f"{name} — {state}: {target.health_detail}"


class RerunOnBackendForm(forms.Form):
    """Choose a backend among ``selectors.rerun_targets()``, probed once per request; the
    active one is preselected when it is healthy. Choosing an unhealthy one is an error."""

    backend = forms.ChoiceField(label="Backend")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.targets = {target.name: target for target in selectors.rerun_targets()}
        field = self.fields["backend"]
        field.widget = BackendSelect(list(self.targets.values()))
        # Unhealthy ones are listed too, so the operator sees why they cannot be chosen.
        field.choices = [(name, rerun_target_label(t)) for name, t in self.targets.items()]  # type: ignore[attr-defined]
        healthy = [name for name, target in self.targets.items() if target.healthy]
        field.initial = healthy[0] if healthy else None
        if not self.targets:
            field.help_text = "No execution backend is configured on this deployment."

    def clean_backend(self) -> str:
        name: str = self.cleaned_data["backend"]
        target = self.targets[name]
        if not target.healthy:
            raise ValidationError(
                f"Backend {name} is not healthy, so nothing was queued: {target.health_detail}"
            )
        return name


@admin.action(description="Re-run selected evaluations on another backend")
def rerun_on_backend(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Evaluation]
) -> TemplateResponse | None:
    """Ask for a backend on an intermediate page, then re-run each evaluation on it."""
    form = RerunOnBackendForm(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        name = form.cleaned_data["backend"]
        queued = 0
        for evaluation in queryset.select_related("runtime"):
            try:
                services.execution_rerun(user=request.user, evaluation=evaluation, backend=name)  # type: ignore[arg-type]
            except ValidationError as exc:
                modeladmin.message_user(
                    request, f"{evaluation}: {'; '.join(exc.messages)}", messages.ERROR
                )
            else:
                queued += 1
        if queued:
            modeladmin.message_user(request, f"Queued {queued} re-run(s) on {name}.")
        return None
    if form.is_bound:
        # Refused before any execution exists: the evaluations are what an operator can grep.
        reason = " ".join(str(error) for error in form.errors.get("backend", ()))
        logger.warning(
            "Refused to re-run evaluation(s) %s on backend %s: %s",
            ", ".join(str(pk) for pk in queryset.values_list("pk", flat=True)),
            form.data.get("backend", ""),
            reason,
        )
        modeladmin.message_user(request, f"Nothing was re-run. {reason}", messages.ERROR)
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Re-run on another backend",
        "subtitle": None,
        "opts": modeladmin.model._meta,
        "form": form,
        "evaluations": queryset.select_related("owner"),
        "action_name": "rerun_on_backend",
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/executions/evaluation/rerun_on_backend.html", context)


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "title", "owner", "runtime", "created_at")
    list_filter = ("runtime", "created_at")
    list_select_related = ("owner", "runtime")
    search_fields = ("=id", "title", "owner__username")
    fields = (
        "owner",
        "title",
        "runtime",
        "files_",
        "stdin",
        "time_limit_ms",
        "memory_mb",
        "output_kb",
        "callback_url",
    )
    readonly_fields = ("files_",)
    inlines = (TestCaseInline, ExecutionInline)
    actions = (rerun_evaluations, rerun_on_backend)
    # Callback URLs are stored with their scheme; a bare host means https.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    class Media:
        css = ADMIN_CSS

    @admin.display(description="files")
    def files_(self, evaluation: Evaluation) -> SafeString:
        """Each source file as a code block under its name; names and code are escaped."""
        return format_html_join(
            "",
            '<figure class="source-file"><figcaption class="source-file-name">{}</figcaption>'
            "<pre><code>{}</code></pre></figure>",
            ((item.get("name", ""), item.get("content", "")) for item in evaluation.files),
        )


class TestResultInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = TestResult
    extra = 0
    can_delete = False
    fields = (
        "test_case",
        "verdict_",
        "exit_code",
        "signal",
        "wall_time_ms",
        "peak_memory_kb",
        "stdout_truncated",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[TestResult]:
        return super().get_queryset(request).select_related("test_case").defer("stdout", "stderr")

    @admin.display(description="verdict")
    def verdict_(self, result: TestResult) -> SafeString | str:
        return verdict_badge(result)


@admin.action(description="Cancel selected executions")
def cancel_executions(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Execution]
) -> None:
    cancelled = sum(services.execution_cancel(user=request.user, execution=e) for e in queryset)  # type: ignore[arg-type]
    modeladmin.message_user(request, f"Cancelled {cancelled} of {queryset.count()} executions.")


class ExecutionChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        # A list page never shows output, which can be megabytes per row.
        return super().get_queryset(request, exclude_parameters).defer(*OUTPUT_FIELDS)


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "evaluation",
        "attempt",
        "owner",
        "status_",
        "verdict_",
        "backend",
        "runtime",
        "duration",
        "score",
        "queued_at",
    )
    list_filter = ("status", "verdict", "backend", "evaluation__runtime", "queued_at")
    list_select_related = ("evaluation__owner", "evaluation__runtime")
    search_fields = ("=id", "=evaluation__id", "evaluation__title", "evaluation__owner__username")
    readonly_fields = ("duration", "stdout_text", "stderr_text", "compile_output_text")
    exclude = OUTPUT_FIELDS
    inlines = (TestResultInline,)
    actions = (cancel_executions,)

    class Media:
        css = ADMIN_CSS

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ExecutionChangeList

    @admin.display(description="owner", ordering="evaluation__owner__username")
    def owner(self, execution: Execution) -> str:
        return str(execution.evaluation.owner)

    @admin.display(description="runtime", ordering="evaluation__runtime__name")
    def runtime(self, execution: Execution) -> str:
        return execution.evaluation.runtime.name

    @admin.display(description="status", ordering="status")
    def status_(self, execution: Execution) -> SafeString:
        return status_badge(execution)

    @admin.display(description="verdict", ordering="verdict")
    def verdict_(self, execution: Execution) -> SafeString | str:
        return verdict_badge(execution)

    @admin.display(description="duration")
    def duration(self, execution: Execution) -> str:
        return execution_duration(execution) or self.get_empty_value_display()


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "actor", "action", "evaluation", "execution")
    list_filter = ("action", ("actor", admin.RelatedOnlyFieldListFilter), "created_at")
    list_select_related = ("actor", "evaluation", "execution")
    search_fields = ("actor__username", "=evaluation__id")


# Quotas ------------------------------------------------------------------------------------


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    list_display = (
        "user",
        "max_concurrent",
        "max_per_day",
        "effective_max_concurrent",
        "effective_max_per_day",
    )
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email")
    autocomplete_fields = ("user",)
    readonly_fields = ("effective_max_concurrent", "effective_max_per_day")

    @admin.display(description="in effect: at once")
    def effective_max_concurrent(self, quota: UserQuota) -> int:
        return quota.effective_max_concurrent

    @admin.display(description="in effect: per 24 h")
    def effective_max_per_day(self, quota: UserQuota) -> int:
        return quota.effective_max_per_day


class UserQuotaInline(admin.StackedInline):
    model = UserQuota
    can_delete = True
    max_num = 1
    fields = ("max_concurrent", "max_per_day")
    verbose_name = verbose_name_plural = "execution quota"


class QuotaUserAdmin(UserAdmin):
    """django.contrib.auth's user admin with the user's execution quota inline."""

    inlines = (*UserAdmin.inlines, UserQuotaInline)


admin.site.unregister(User)
admin.site.register(User, QuotaUserAdmin)


# Backend health ----------------------------------------------------------------------------


def backend_health_view(request: HttpRequest) -> HttpResponse:
    """Each backend's health and isolation summary, and which one is active and why."""
    context = {
        **admin.site.each_context(request),
        "title": "Backend health",
        "subtitle": None,
        "opts": Execution._meta,
        "rows": selectors.backends_overview(),
    }
    return TemplateResponse(request, "admin/executions/backend_health.html", context)


def operations_view(request: HttpRequest) -> HttpResponse:
    """The operations dashboard: throughput, verdicts, latency, the queue and failures over
    the last hour or day (``?span=``), and each part's health now."""
    key = request.GET.get("span", "hour")
    span = operations.SPANS.get(key)
    if span is None:
        expected = ", ".join(operations.SPANS)
        return HttpResponseBadRequest(
            f"span: expected one of {expected}, got {key!r}.", content_type="text/plain"
        )
    context = {
        **admin.site.each_context(request),
        "title": "Operations",
        "subtitle": None,
        "opts": Execution._meta,
        "spans": list(operations.SPANS.values()),
        "dashboard": operations.dashboard(span),
        "parts": operations.parts_health(),
    }
    return TemplateResponse(request, "admin/executions/operations.html", context)


def _with_operator_urls(
    site_urls: Callable[[], list[URLResolver | URLPattern]],
) -> Callable[[], list[URLResolver | URLPattern]]:
    def get_urls() -> list[URLResolver | URLPattern]:
        health = path(
            "executions/backend-health/",
            admin.site.admin_view(backend_health_view),
            name="executions_backend_health",
        )
        dashboard = path(
            "executions/operations/",
            admin.site.admin_view(operations_view),
            name="executions_operations",
        )
        # First, so that they win over the app index and the admin's catch-all.
        return [health, dashboard, *site_urls()]

    return get_urls


# The page lives beside the app's models in the admin; a ModelAdmin's own URLs would sit
# under /admin/executions/execution/, and a custom AdminSite would mean replacing
# django.contrib.admin in INSTALLED_APPS for one page.
admin.site.get_urls = _with_operator_urls(admin.site.get_urls)  # type: ignore[method-assign]


@admin.register(WebhookSecret)
class WebhookSecretAdmin(admin.ModelAdmin):
    """The secret itself is never listed: rotating shows the new one once, in a message."""

    list_display = ["user", "rotated_at"]
    search_fields = ["user__username"]
    fields = ["user", "rotated_at"]
    readonly_fields = ["user", "rotated_at"]
    actions = ["rotate"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Rotate the webhook secret (shows the new one once)")
    def rotate(self, request: HttpRequest, queryset: QuerySet[WebhookSecret]) -> None:
        for row in queryset.select_related("user"):
            secret = services.webhook_secret_rotate(row.user)
            self.message_user(
                request, f"New webhook secret of {row.user}: {secret}", messages.WARNING
            )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Every delivery attempt, read-only: the record of what receivers were sent."""

    list_display = [
        "execution",
        "attempt",
        "url",
        "succeeded",
        "status_code",
        "duration_ms",
        "next_retry_at",
        "created_at",
    ]
    list_filter = ["succeeded", "created_at"]
    search_fields = ["url", "execution__evaluation__owner__username"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
