"""Template filters for showing run states."""

from __future__ import annotations

from django import template

from executions.models import Status, Verdict

register = template.Library()


@register.filter
def status_label(value: str) -> str:
    return Status(value).label if value in Status.values else value


@register.filter
def verdict_label(value: str) -> str:
    return Verdict(value).label if value in Verdict.values else value
