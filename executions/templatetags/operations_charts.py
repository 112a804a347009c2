"""Charts of the operations dashboard, drawn as inline SVG on the server (no script).

Each tag takes the selector's series (``executions.operations``) and lays them out: bars or
lines on a fixed canvas that the page scales to its width, an axis with a few labels, and a
``<title>`` on every mark with the exact figure under it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone

from executions.operations import OutcomeCount, Series

register = template.Library()

WIDTH = 720
HEIGHT = 200
LEFT = 56  # room for the value axis' labels
RIGHT = 8
TOP = 10
BOTTOM = 24  # room for the time axis' labels
PLOT_WIDTH = WIDTH - LEFT - RIGHT
PLOT_HEIGHT = HEIGHT - TOP - BOTTOM
# About this many time labels under a chart, whatever the number of buckets.
TIME_LABELS = 6

COLOURS = {
    "accepted": "#146c43",
    "rejected": "#c77700",
    "infrastructure": "#b02a37",
    "cancelled": "#6c757d",
    "worker_lost": "#6f42c1",
    "unavailable": "#b02a37",
    "backend_error": "#d63384",
    "refused": "#a04900",
    "queued": "#6c757d",
    "running": "#0b5ed7",
    "p50": "#0b5ed7",
    "p95": "#a04900",
}
# For series with no colour of their own (an error kind added later, say).
PALETTE = ("#0dcaf0", "#20c997", "#fd7e14", "#6610f2", "#495057")


def colour(key: str, position: int = 0) -> str:
    return COLOURS.get(key, PALETTE[position % len(PALETTE)])


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as an operator reads them: ``350 ms``, ``2.5 s``, ``4 min 10 s``, ``2 h 5 min``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at least ``value`` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _n(coordinate: float) -> str:
    """A coordinate as SVG wants it, whatever the locale the page is rendered in."""
    return f"{coordinate:.1f}"


def _amount(value: float, unit: str) -> str:
    if unit == "seconds":
        return duration(value)
    return f"{value:g}"


def _time_axis(starts: Sequence[datetime]) -> list[dict[str, Any]]:
    step = max(1, math.ceil(len(starts) / TIME_LABELS))
    slot = PLOT_WIDTH / max(1, len(starts))
    return [
        {"x": _n(LEFT + slot * (index + 0.5)), "text": f"{timezone.localtime(start):%H:%M}"}
        for index, start in enumerate(starts)
        if index % step == 0
    ]


def _value_axis(top: float, unit: str) -> list[dict[str, Any]]:
    # Runs are counted in whole numbers: no line half-way up to 1 or 5.
    fractions = (0.0, 1.0) if unit == "runs" and top % 2 else (0.0, 0.5, 1.0)
    return [
        {"y": _n(TOP + PLOT_HEIGHT * (1 - fraction)), "text": _amount(top * fraction, unit)}
        for fraction in fractions
    ]


def _frame(chart_id: str, title: str, starts: Sequence[datetime], top: float, unit: str) -> dict:
    return {
        "chart_id": chart_id,
        "title": title,
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "axis_x": LEFT - 6,
        "right": WIDTH - RIGHT,
        "label_y": HEIGHT - 6,
        "time_axis": _time_axis(starts),
        "value_axis": _value_axis(top, unit),
    }


@register.inclusion_tag("admin/executions/charts/bars.html")
def stacked_bars(
    chart_id: str, title: str, series: Sequence[Series], starts: Sequence[datetime]
) -> dict[str, Any]:
    """One bar per bucket, its series stacked in order; counts."""
    totals = [sum(one.values[index] or 0 for one in series) for index in range(len(starts))]
    top = nice_ceiling(max(totals, default=0))
    slot = PLOT_WIDTH / max(1, len(starts))
    bars = []
    for index, start in enumerate(starts):
        base = 0.0
        for position, one in enumerate(series):
            value = one.values[index] or 0
            if not value:
                continue
            height = PLOT_HEIGHT * value / top
            bars.append(
                {
                    "x": _n(LEFT + slot * index + slot * 0.1),
                    "y": _n(TOP + PLOT_HEIGHT - PLOT_HEIGHT * base / top - height),
                    "width": _n(slot * 0.8),
                    "height": _n(height),
                    "colour": colour(one.key, position),
                    "series": one.key,
                    "value": f"{value:g}",
                    "title": f"{timezone.localtime(start):%H:%M}: {one.label} {value:g}",
                }
            )
            base += value
    return {
        **_frame(chart_id, title, starts, top, "runs"),
        "bars": bars,
        "legend": _legend(series, "runs"),
    }


@register.inclusion_tag("admin/executions/charts/lines.html")
def line_chart(
    chart_id: str,
    title: str,
    series: Sequence[Series],
    starts: Sequence[datetime],
    unit: str = "runs",
) -> dict[str, Any]:
    """One line per series through its buckets, broken where a bucket has no value;
    ``unit`` is ``runs`` or ``seconds``."""
    values = [value for one in series for value in one.values if value is not None]
    top = nice_ceiling(max(values, default=0))
    slot = PLOT_WIDTH / max(1, len(starts))
    lines = []
    for position, one in enumerate(series):
        segments: list[list[str]] = []
        points = []
        previous: float | None = None  # the value before, None at a gap
        for index, value in enumerate(one.values):
            if value is None:
                previous = None
                continue
            x = LEFT + slot * (index + 0.5)
            y = TOP + PLOT_HEIGHT * (1 - value / top)
            if previous is None:
                segments.append([])
            segments[-1].append(f"{_n(x)},{_n(y)}")
            previous = value
            points.append(
                {
                    "x": _n(x),
                    "y": _n(y),
                    "value": f"{value:g}",
                    "title": f"{timezone.localtime(starts[index]):%H:%M}: {one.label} "
                    f"{_amount(value, unit)}",
                }
            )
        lines.append(
            {
                "series": one.key,
                "colour": colour(one.key, position),
                "segments": [" ".join(segment) for segment in segments],
                "points": points,
            }
        )
    return {
        **_frame(chart_id, title, starts, top, unit),
        "lines": lines,
        "legend": _legend(series, unit),
    }


def _legend(series: Sequence[Series], unit: str) -> list[dict[str, Any]]:
    legend = []
    for position, one in enumerate(series):
        present = [value for value in one.values if value is not None]
        if unit == "seconds":
            figure = f"highest {duration(max(present))}" if present else "no runs"
        elif one.key in ("queued", "running"):
            figure = f"now {present[-1]:g}" if present else ""
        else:
            figure = f"{one.total:g} in all"
        legend.append(
            {
                "key": one.key,
                "label": one.label,
                "colour": colour(one.key, position),
                "figure": figure,
            }
        )
    return legend


@register.inclusion_tag("admin/executions/charts/outcomes.html")
def outcome_bars(chart_id: str, outcomes: Sequence[OutcomeCount]) -> dict[str, Any]:
    """The verdict mix: one horizontal bar per outcome, longest first, with its share."""
    total = sum(outcome.count for outcome in outcomes)
    longest = max((outcome.count for outcome in outcomes), default=0) or 1
    return {
        "chart_id": chart_id,
        "rows": [
            {
                "key": outcome.key,
                "label": outcome.label,
                "count": outcome.count,
                "share": f"{100 * outcome.count / total:.0f}%" if total else "",
                "width": f"{100 * outcome.count / longest:.1f}",
                "colour": colour(outcome.group),
            }
            for outcome in outcomes
        ],
    }
