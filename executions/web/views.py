"""Evaluator pages: submit, list, follow a run live, cancel and re-run, and the security page.

Thin: selectors read, services write, templates render.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.forms import BaseFormSet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from executions import security, selectors, services
from executions.models import Evaluation, Execution, Runtime, Status, Verdict
from executions.web.forms import SubmitForm, TestCaseFormSet

CASE_FIELD = re.compile(r"^test_cases\[(\d+)\]\.(\w+)$")


@login_required
def evaluation_list(request: HttpRequest) -> HttpResponse:
    filters = {
        "status": request.GET.get("status", ""),
        "verdict": request.GET.get("verdict", ""),
        "runtime": request.GET.get("runtime", ""),
    }
    evaluations = selectors.evaluation_list(
        request.user,
        status=filters["status"],
        verdict=filters["verdict"],
        runtime=filters["runtime"],
    )
    page = Paginator(evaluations, 25).get_page(request.GET.get("page"))
    query = "&".join(f"{key}={value}" for key, value in filters.items() if value)
    context = {
        "page": page,
        "filters": filters,
        "filtered": any(filters.values()),
        "query": query,
        "statuses": Status.choices,
        "verdicts": Verdict.choices,
        "runtimes": selectors.runtimes_enabled(),
    }
    return render(request, "executions/evaluation_list.html", context)


@login_required
def evaluation_submit(request: HttpRequest) -> HttpResponse:
    runtimes = selectors.runtimes_enabled()
    resubmit = _resubmit_initial(request) if request.method == "GET" else None
    form = SubmitForm(
        request.POST or None, runtimes=runtimes, initial=resubmit.form if resubmit else None
    )
    cases = TestCaseFormSet(
        request.POST or None, prefix="cases", initial=resubmit.cases if resubmit else None
    )
    # Both, not one then the other, so that every error shows at once.
    form_valid, cases_valid = form.is_valid(), cases.is_valid()
    if request.method == "POST" and form_valid and cases_valid:
        data = form.cleaned_data
        test_cases = [
            {**case, "tolerance": case["tolerance"] if case["tolerance"] is not None else 1e-6}
            for case in cases.cleaned_data
            if case
            and not case.get("DELETE")
            and (case.get("stdin") or case.get("expected_output"))
        ]
        for case in test_cases:
            case.pop("DELETE", None)
        try:
            evaluation = services.evaluation_submit(
                user=request.user,  # type: ignore[arg-type]
                runtime=data["runtime"],
                source=data["source"],
                stdin=data["stdin"],
                test_cases=test_cases,
                time_limit_ms=data["time_limit_ms"],
                memory_mb=data["memory_mb"],
                output_kb=data["output_kb"],
                title=data["title"],
            )
        except ValidationError as exc:
            _attach_errors(exc, form, cases)
        else:
            return redirect(evaluation)
    context = {
        "form": form,
        "cases": cases,
        "runtimes": runtimes,
        "runtime_data": _runtime_data(runtimes),
        # Only a fresh form starts from the runtime's hello-world: a resubmission keeps its
        # source, and a form sent back with errors keeps what was sent, even when empty.
        "starter_code": not form.is_bound and resubmit is None,
        "resubmit": resubmit,
    }
    return render(request, "executions/evaluation_submit.html", context)


def _runtime_data(runtimes: Iterable[Runtime]) -> dict[str, dict[str, Any]]:
    """What the submit page's script shows and does when a runtime is picked, by name."""
    return {
        runtime.name: {
            "language": runtime.language,
            "display_name": runtime.display_name,
            "editor_mode": runtime.editor_mode,
            "hello_world": runtime.hello_world,
            "compiles": runtime.compiles,
            "compile_time_limit_ms": runtime.compile_time_limit_ms,
            "compile_memory_mb": runtime.compile_memory_mb,
            "time_limit_ms": [runtime.default_time_limit_ms, runtime.max_time_limit_ms],
            "memory_mb": [runtime.default_memory_mb, runtime.max_memory_mb],
            "output_kb": [runtime.default_output_kb, runtime.max_output_kb],
            "network": runtime.network_enabled,
        }
        for runtime in runtimes
    }


def _resubmit_initial(request: HttpRequest) -> selectors.ResubmitInitial | None:
    """The evaluation named by ``?from=`` to start the form from, if any."""
    source = request.GET.get("from")
    if not source:
        return None
    try:
        return selectors.resubmit_initial(request.user, int(source))
    except (ValueError, Evaluation.DoesNotExist):
        raise Http404("No such evaluation.") from None


def _attach_errors(exc: ValidationError, form: SubmitForm, cases: BaseFormSet) -> None:
    """Show each service error next to the field it names; the rest above the form."""
    errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    filled = [
        case
        for case in cases.forms
        if not case.cleaned_data.get("DELETE")
        and (case.cleaned_data.get("stdin") or case.cleaned_data.get("expected_output"))
    ]
    for path, messages_ in errors.items():
        match = CASE_FIELD.match(path)
        if match:
            # Submitted cases skip empty rows, so map back by order among the filled ones.
            index, name = int(match.group(1)), match.group(2)
            if index < len(filled) and name in filled[index].fields:
                filled[index].add_error(name, messages_)
                continue
        name = path.split("[", 1)[0].split(".", 1)[0]
        if name == "files":
            name = "source"
        form.add_error(name if name in form.fields else None, messages_)


def _detail_context(request: HttpRequest, pk: int) -> dict[str, Any]:
    try:
        evaluation = selectors.evaluation_detail(request.user, pk)
    except Evaluation.DoesNotExist:
        raise Http404("No such evaluation.") from None
    executions = list(evaluation.executions.all())
    latest = executions[0] if executions else None
    return {
        "evaluation": evaluation,
        "executions": executions,
        "latest": latest,
        "attempt": selectors.attempt_view(latest, request.user) if latest else None,
        "history": selectors.history(executions),
        "queue_position": selectors.queue_position(latest) if latest else None,
        "can_resubmit": selectors.can_resubmit(request.user, evaluation),
    }


@login_required
def evaluation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "executions/evaluation_detail.html", _detail_context(request, pk))


@login_required
def evaluation_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The latest attempt's section alone, polled by the detail page while it runs."""
    return render(request, "executions/_latest_execution.html", _detail_context(request, pk))


@login_required
@require_POST
def execution_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        execution = selectors.execution_for_user(request.user, pk)
    except Execution.DoesNotExist:
        raise Http404("No such execution.") from None
    if services.execution_cancel(user=request.user, execution=execution):  # type: ignore[arg-type]
        messages.success(request, f"Attempt {execution.attempt} was cancelled.")
    else:
        messages.info(request, f"Attempt {execution.attempt} had already ended.")
    return redirect(execution.evaluation)


@login_required
@require_POST
def evaluation_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        evaluation = selectors.evaluations_visible_to(request.user).get(pk=pk)
    except Evaluation.DoesNotExist:
        raise Http404("No such evaluation.") from None
    latest = selectors.latest_status(evaluation)
    if latest and not selectors.rerun_allowed(latest[1]):
        attempt, status = latest
        messages.error(
            request,
            f"Attempt {attempt} is still {Status(status).label.lower()}: wait for it to end, "
            "or cancel it, before running this again.",
        )
        return redirect(evaluation)
    try:
        execution = services.execution_rerun(user=request.user, evaluation=evaluation)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.messages:
            messages.error(request, error)
    else:
        messages.success(request, f"Attempt {execution.attempt} was queued.")
    return redirect(evaluation)


def security_page(request: HttpRequest) -> HttpResponse:
    """Which backend runs code here and why, what each backend trusts, and (for staff) the
    live posture of this deployment. Anyone may read it: a visitor deciding whether to trust
    the platform needs the trade-offs; the posture checks are for staff only."""
    is_staff = bool(getattr(request.user, "is_staff", False))
    context = {
        "profiles": security.BACKEND_PROFILES,
        "active_profile": security.active_profile_key(),
        "checks": security.posture_checks() if is_staff else None,
        "isolation": security.active_isolation(),
    }
    return render(request, "executions/security.html", context)
