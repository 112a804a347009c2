"""Django admin: runtimes are managed here; run records are read-only, changed only by actions
that call services (and so are audited)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from executions import services
from executions.models import AuditEvent, Evaluation, Execution, Runtime, TestCase, TestResult


class ReadOnlyAdminMixin:
    """Records written by the platform: viewable, never added or edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Runtime)
class RuntimeAdmin(admin.ModelAdmin):
    list_display = (
        "display_name",
        "name",
        "image",
        "max_time_limit_ms",
        "max_memory_mb",
        "network_enabled",
        "enabled",
    )
    list_filter = ("enabled", "network_enabled", "language")
    search_fields = ("name", "display_name", "image")


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
    fields = ("attempt", "backend", "status", "verdict", "score", "queued_at", "finished_at")
    readonly_fields = fields


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


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "title", "owner", "runtime", "created_at")
    list_filter = ("runtime", "created_at")
    list_select_related = ("owner", "runtime")
    search_fields = ("=id", "title", "owner__username")
    inlines = (TestCaseInline, ExecutionInline)
    actions = (rerun_evaluations,)


class TestResultInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = TestResult
    extra = 0
    can_delete = False
    fields = ("test_case", "verdict", "exit_code", "signal", "wall_time_ms", "stdout_truncated")
    readonly_fields = fields


@admin.action(description="Cancel selected executions")
def cancel_executions(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Execution]
) -> None:
    cancelled = sum(services.execution_cancel(user=request.user, execution=e) for e in queryset)  # type: ignore[arg-type]
    modeladmin.message_user(request, f"Cancelled {cancelled} of {queryset.count()} executions.")


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "evaluation",
        "attempt",
        "backend",
        "status",
        "verdict",
        "score",
        "wall_time_ms",
        "queued_at",
    )
    list_filter = ("status", "verdict", "backend", "evaluation__runtime", "queued_at")
    list_select_related = ("evaluation",)
    search_fields = ("=id", "=evaluation__id", "evaluation__title", "evaluation__owner__username")
    readonly_fields = ("stdout_text", "stderr_text")
    exclude = ("stdout", "stderr")
    inlines = (TestResultInline,)
    actions = (cancel_executions,)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "actor", "action", "evaluation", "execution")
    list_filter = ("action", "created_at")
    list_select_related = ("actor", "evaluation", "execution")
    search_fields = ("actor__username", "=evaluation__id")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
