"""The metric catalog's form."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from core.errors import DomainError
from experiments.filters import MAX_PROPERTY_NAME_LENGTH
from experiments.forms.fields import JSONTextField, add_error_to_form
from experiments.models import Direction, Metric, MetricKind
from experiments.services import MAX_CONVERSION_WINDOW_HOURS


class MetricForm(forms.Form):
    key = forms.SlugField(max_length=100, help_text="Used in experiment definitions and exports.")
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    kind = forms.ChoiceField(choices=MetricKind.choices, initial=MetricKind.BINOMIAL)
    event_name = forms.CharField(
        max_length=200, help_text="The metric event (its `name`) that counts, e.g. purchase."
    )
    denominator_event = forms.CharField(
        max_length=200, required=False, help_text="Ratio metrics only: the denominator's event."
    )
    direction = forms.ChoiceField(choices=Direction.choices, initial=Direction.INCREASE)
    quantile = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text="Quantile metrics only (release health): 0.95 is p95 of the event's values.",
    )
    conversion_window_hours = forms.IntegerField(
        min_value=1,
        max_value=MAX_CONVERSION_WINDOW_HOURS,
        initial=72,
        help_text="Events count this long after a unit's first exposure (at most a year, "
        f"{MAX_CONVERSION_WINDOW_HOURS} h).",
    )
    winsorize_quantile = forms.FloatField(
        required=False,
        min_value=0.5,
        max_value=1,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text="Optional: cap per-unit values at this quantile (0.99) to tame outliers.",
    )
    filters = JSONTextField(
        empty=[],
        label="Filters on event properties",
        help_text="Optional: only events whose properties pass every filter count, e.g. "
        '[{"property": "plan", "op": "in", "value": ["pro", "team"]}]. Operators: eq, neq, in, '
        "gt, gte, lt, lte, contains.",
    )
    value_property = forms.CharField(
        max_length=MAX_PROPERTY_NAME_LENGTH,
        required=False,
        label="Value from property",
        help_text="Optional, mean and ratio metrics: the property whose number is the event's "
        "value (e.g. amount); events without a number there add nothing.",
    )
    cuped = forms.BooleanField(
        required=False,
        initial=True,
        label="CUPED variance reduction",
        help_text="Use the pre-exposure value of the same metric to narrow intervals.",
    )

    def __init__(self, *args: Any, metric: Metric | None = None, frozen: bool = False, **kw: Any):
        super().__init__(*args, **kw)
        if metric is not None:
            self.fields["key"].disabled = True
            if frozen:
                for name in ("kind", "event_name", "denominator_event", "direction"):
                    self.fields[name].disabled = True
                for name in ("conversion_window_hours", "winsorize_quantile", "quantile", "cuped"):
                    self.fields[name].disabled = True
                for name in ("filters", "value_property"):
                    self.fields[name].disabled = True

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("kind") == MetricKind.RATIO and not data.get("denominator_event"):
            self.add_error("denominator_event", "A ratio metric needs a denominator event.")
        if data.get("kind") == MetricKind.QUANTILE and data.get("quantile") is None:
            self.add_error("quantile", "A quantile metric needs its quantile (0.95 is p95).")
        return data

    def service_arguments(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in self.cleaned_data.items()
            if not self.fields[name].disabled
        }

    def add_domain_error(self, exc: DomainError | ValidationError) -> None:
        add_error_to_form(self, exc)
