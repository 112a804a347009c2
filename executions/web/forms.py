"""Forms for the evaluator pages. They shape input; services validate it.

No field here rejects a value the service also checks: a form error would keep the service
from being asked, and the page would report one error now and the next only after that is
fixed. Every check lives in ``services.evaluation_submit``, which reports them all at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from typing import Any

from django import forms

from executions.models import Comparison, Runtime


class NumberAsTyped(forms.Field):
    """A number converted when it parses and passed on as typed when it does not, so the
    service's check names it beside every other error; None when empty."""

    widget = forms.NumberInput

    def __init__(self, *, number: type[int] | type[float], **kwargs: Any) -> None:
        self.number = number
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> int | float | str | None:
        text = "" if value is None else str(value).strip()
        if not text:
            return None
        try:
            return self.number(text)
        except ValueError:
            return text


class MultilineText(forms.CharField):
    """A textarea's text with the CRLF line breaks every browser submits turned back into
    the LF the page showed: otherwise a resubmitted exact-comparison case, or input read
    line by line, would differ from what was typed by a carriage return per line."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str:
        return str(super().to_python(value)).replace("\r\n", "\n")


class SubmitForm(forms.Form):
    title = forms.CharField(required=False, widget=forms.TextInput(attrs={"maxlength": 200}))
    # The runtime's name, checked by the service (unknown or disabled) like everything else.
    runtime = forms.CharField(required=False, widget=forms.Select)
    source = MultilineText(
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "code"})
    )
    stdin = MultilineText(widget=forms.Textarea(attrs={"rows": 4, "class": "code"}))
    time_limit_ms = NumberAsTyped(number=int, label="Time limit (ms)")
    memory_mb = NumberAsTyped(number=int, label="Memory (MB)")
    output_kb = NumberAsTyped(number=int, label="Output (KB)")

    def __init__(self, *args: Any, runtimes: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["runtime"].widget.choices = runtime_choices(runtimes)


def runtime_choices(runtimes: Iterable[Runtime]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The picker's choices, one group per language in the order given (the selector's, by
    language): each runtime labelled by its version, or by its display name when it has none."""
    return [
        (language, [(runtime.name, runtime.version or runtime.display_name) for runtime in group])
        for language, group in groupby(runtimes, key=lambda runtime: runtime.language)
    ]


class TestCaseForm(forms.Form):
    name = forms.CharField(required=False, widget=forms.TextInput(attrs={"maxlength": 100}))
    stdin = MultilineText(widget=forms.Textarea(attrs={"rows": 2, "class": "code"}))
    expected_output = MultilineText(widget=forms.Textarea(attrs={"rows": 2, "class": "code"}))
    comparison = forms.CharField(
        widget=forms.Select(choices=Comparison.choices),
        initial=Comparison.TRAILING_WHITESPACE,
        required=False,
    )
    tolerance = NumberAsTyped(
        number=float, initial=1e-6, widget=forms.NumberInput(attrs={"step": "any"})
    )
    weight = NumberAsTyped(number=int, initial=1, widget=forms.NumberInput(attrs={"min": 1}))
    hidden = forms.BooleanField(required=False)


# One empty row to start with; the page's script adds and removes rows.
TestCaseFormSet = forms.formset_factory(
    TestCaseForm, extra=1, max_num=50, absolute_max=50, can_delete=True
)
