"""Reads shared by the pages, the API and admin."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Prefetch, QuerySet

from executions.models import Evaluation, Execution, Runtime, TestResult


def runtimes_enabled() -> QuerySet[Runtime]:
    return Runtime.objects.filter(enabled=True)


def evaluations_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Evaluation]:
    """Staff see every evaluation; everyone else sees their own."""
    evaluations = Evaluation.objects.select_related("runtime", "owner")
    if getattr(user, "is_staff", False):
        return evaluations
    return evaluations.filter(owner_id=user.pk)


def evaluation_list(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Evaluation]:
    latest = Execution.objects.order_by("-attempt")
    return evaluations_visible_to(user).prefetch_related(Prefetch("executions", queryset=latest))


def evaluation_detail(user: AbstractBaseUser | AnonymousUser, pk: int) -> Evaluation:
    """The evaluation with its test cases and every execution's results.

    Raises ``Evaluation.DoesNotExist`` when it does not exist or the user may not see it.
    """
    results = TestResult.objects.select_related("test_case")
    executions = Execution.objects.order_by("-attempt").prefetch_related(
        Prefetch("results", queryset=results)
    )
    return (
        evaluations_visible_to(user)
        .prefetch_related("test_cases", Prefetch("executions", queryset=executions))
        .get(pk=pk)
    )


def execution_for_user(user: AbstractBaseUser | AnonymousUser, pk: int) -> Execution:
    return Execution.objects.select_related("evaluation").get(
        pk=pk, evaluation__in=evaluations_visible_to(user)
    )


def can_see_hidden_cases(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(getattr(user, "is_staff", False))
