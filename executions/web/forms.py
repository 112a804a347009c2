"""Forms for the evaluator pages. They shape input; services validate it."""

from __future__ import annotations

from django import forms

from executions.models import Comparison, Runtime


class SubmitForm(forms.Form):
    title = forms.CharField(max_length=200, required=False)
    runtime = forms.ModelChoiceField(
        queryset=Runtime.objects.none(), to_field_name="name", empty_label=None
    )
    source = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "code"}),
        strip=False,
    )
    stdin = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "class": "code"}), required=False, strip=False
    )
    time_limit_ms = forms.IntegerField(required=False, label="Time limit (ms)")
    memory_mb = forms.IntegerField(required=False, label="Memory (MB)")
    output_kb = forms.IntegerField(required=False, label="Output (KB)")

    def __init__(self, *args: object, runtimes: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["runtime"].queryset = runtimes  # type: ignore[attr-defined]


class TestCaseForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)
    stdin = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "class": "code"}), required=False, strip=False
    )
    expected_output = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "class": "code"}), required=False, strip=False
    )
    comparison = forms.ChoiceField(
        choices=Comparison.choices, initial=Comparison.TRAILING_WHITESPACE
    )
    tolerance = forms.FloatField(initial=1e-6, required=False)
    weight = forms.IntegerField(initial=1, min_value=1)
    hidden = forms.BooleanField(required=False)


# One empty row to start with; the page's script adds and removes rows.
TestCaseFormSet = forms.formset_factory(
    TestCaseForm, extra=1, max_num=50, absolute_max=50, can_delete=True
)
