"""Evaluator pages: submit, list, detail, cancel and re-run. Thin: services do the work."""

from __future__ import annotations

import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.forms import BaseFormSet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from executions import selectors, services
from executions.models import Evaluation, Execution
from executions.web.forms import SubmitForm, TestCaseFormSet

CASE_FIELD = re.compile(r"^test_cases\[(\d+)\]\.(\w+)$")


@login_required
def evaluation_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.evaluation_list(request.user), 25).get_page(request.GET.get("page"))
    return render(request, "executions/evaluation_list.html", {"page": page})


@login_required
def evaluation_submit(request: HttpRequest) -> HttpResponse:
    runtimes = selectors.runtimes_enabled()
    form = SubmitForm(request.POST or None, runtimes=runtimes)
    cases = TestCaseFormSet(request.POST or None, prefix="cases")
    if request.method == "POST" and form.is_valid() and cases.is_valid():
        data = form.cleaned_data
        test_cases = [
            {**case, "tolerance": case["tolerance"] if case["tolerance"] is not None else 1e-6}
            for case in cases.cleaned_data
            if case and (case.get("stdin") or case.get("expected_output"))
        ]
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
    return render(
        request,
        "executions/evaluation_submit.html",
        {"form": form, "cases": cases, "runtimes": runtimes},
    )


def _attach_errors(exc: ValidationError, form: SubmitForm, cases: BaseFormSet) -> None:
    """Show each service error next to the field it names."""
    for path, errors in exc.message_dict.items():
        match = CASE_FIELD.match(path)
        if match:
            # Submitted cases skip empty rows, so map back by order among non-empty ones.
            filled = [
                f
                for f in cases.forms
                if f.cleaned_data.get("stdin") or f.cleaned_data.get("expected_output")
            ]
            index, name = int(match.group(1)), match.group(2)
            if index < len(filled) and name in filled[index].fields:
                filled[index].add_error(name, errors)
                continue
        name = path.split("[", 1)[0].split(".", 1)[0]
        if name == "files":
            name = "source"
        form.add_error(name if name in form.fields else None, errors)


@login_required
def evaluation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        evaluation = selectors.evaluation_detail(request.user, pk)
    except Evaluation.DoesNotExist:
        raise Http404("No such evaluation.") from None
    executions = list(evaluation.executions.all())
    context = {
        "evaluation": evaluation,
        "executions": executions,
        "latest": executions[0] if executions else None,
        "show_hidden": selectors.can_see_hidden_cases(request.user),
    }
    return render(request, "executions/evaluation_detail.html", context)


@login_required
@require_POST
def execution_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        execution = selectors.execution_for_user(request.user, pk)
    except Execution.DoesNotExist:
        raise Http404("No such execution.") from None
    if services.execution_cancel(user=request.user, execution=execution):  # type: ignore[arg-type]
        messages.success(request, f"Execution {execution.pk} was cancelled.")
    else:
        messages.info(request, f"Execution {execution.pk} had already ended.")
    return redirect(execution.evaluation)


@login_required
@require_POST
def evaluation_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        evaluation = selectors.evaluations_visible_to(request.user).get(pk=pk)
    except Evaluation.DoesNotExist:
        raise Http404("No such evaluation.") from None
    try:
        execution = services.execution_rerun(user=request.user, evaluation=evaluation)  # type: ignore[arg-type]
    except ValidationError as exc:
        for errors in exc.message_dict.values():
            for error in errors:
                messages.error(request, error)
    else:
        messages.success(request, f"Attempt {execution.attempt} was queued.")
    return redirect(evaluation)
