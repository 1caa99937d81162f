"""Forms of the release pages. They check shape (numbers, choices, a time); the services
(releases.services) enforce the rules, and their DomainError lands on the field it names
(``steps[2].percent`` on that step's row, ``metrics[0].metric`` on that metric's row)."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import PermissionDenied, ValidationError
from django.forms.formsets import BaseFormSet, formset_factory

from core.errors import DomainError
from experiments.models import Environment, Metric, Project
from flags.forms import kept_rows

from .models import ReleaseKind, ReleaseMetricRole
from .page import quantile_label
from .validation import DEFAULT_BLUE_GREEN_STEPS, DEFAULT_CANARY_STEPS

KIND_STEPS = {
    ReleaseKind.CANARY: DEFAULT_CANARY_STEPS,
    ReleaseKind.BLUE_GREEN: DEFAULT_BLUE_GREEN_STEPS,
}
ROW_FIELD = re.compile(r"^(steps|metrics)\[(\d+)\](?:\.(\w+))?$")


def metric_label(metric: Metric) -> str:
    """How the catalog's metric reads in the form: name, key and what it measures (p95 ...)."""
    if metric.kind == "quantile":
        what = f"{quantile_label(metric.quantile)} of {metric.event_name}"
    elif metric.kind == "ratio":
        what = f"{metric.event_name} / {metric.denominator_event}"
    else:
        what = f"{metric.get_kind_display().split(' (')[0].lower()}, {metric.event_name}"
    better = "lower is better" if metric.direction == "decrease" else "higher is better"
    return f"{metric.name} ({metric.key}: {what}; {better})"


class ReleaseForm(forms.Form):
    flag = forms.ChoiceField()
    environment = forms.ChoiceField()
    variation = forms.ChoiceField(
        label="New variation", help_text="What the release serves to more and more units."
    )
    baseline_variation = forms.ChoiceField(
        label="Baseline",
        required=False,
        help_text="What the other units keep getting, and what a rollback serves to everyone.",
    )
    kind = forms.ChoiceField(choices=ReleaseKind.choices, initial=ReleaseKind.CANARY)
    auto_rollback = forms.BooleanField(
        label="Roll back automatically on harm",
        required=False,
        initial=True,
        help_text="Off: harm holds the release and notifies; a person rolls it back.",
    )
    alpha = forms.FloatField(
        initial=0.05,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text="The chance of rolling back a harmless release, over all steps and metrics.",
    )
    analysis_interval_seconds = forms.IntegerField(
        label="Analysis interval (seconds)",
        required=False,
        widget=forms.NumberInput(attrs={"step": 1, "min": 1, "placeholder": "default"}),
        help_text="How often the monitor analyses the current step. Empty: every minute (or "
        "the server's minimum interval, when higher).",
    )
    start_at = forms.DateTimeField(
        label="Scheduled start (UTC)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Empty: start now.",
    )
    description = forms.CharField(
        required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2})
    )

    def __init__(
        self,
        *args: Any,
        flags: dict[str, dict[str, Any]],
        environments: list[Environment],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.flags = flags
        self.fields["flag"].choices = [("", "choose a flag")] + [
            (key, f"{f['name']} ({key})") for key, f in flags.items()
        ]
        self.fields["environment"].choices = [
            (e.key, f"{e.name} (production)" if e.production else e.name) for e in environments
        ]
        flag_key = self.data.get("flag") if self.is_bound else self.initial.get("flag")
        env_key = self.data.get("environment") if self.is_bound else self.initial.get("environment")
        flag = flags.get(flag_key or "")
        variations = [(v, v) for v in flag["variations"]] if flag else []
        self.fields["variation"].choices = [("", "choose a variation")] + variations
        default = flag["defaults"].get(env_key or "", flag["off_variation"]) if flag else None
        self.fields["baseline_variation"].choices = [
            (
                "",
                f"the environment's default ({default})"
                if default
                else "the environment's default",
            )
        ] + variations


class StepForm(forms.Form):
    percent = forms.FloatField(
        widget=forms.NumberInput(attrs={"step": "any", "min": 0, "max": 100})
    )
    min_minutes = forms.FloatField(
        label="Min minutes", widget=forms.NumberInput(attrs={"step": "any", "min": 0})
    )
    min_units = forms.IntegerField(
        label="Min units per side", widget=forms.NumberInput(attrs={"step": 1, "min": 0})
    )


class MetricRowForm(forms.Form):
    metric = forms.ChoiceField(required=False)
    role = forms.ChoiceField(choices=ReleaseMetricRole.choices, initial=ReleaseMetricRole.GUARDRAIL)
    non_inferiority_margin = forms.FloatField(
        label="Tolerated",
        required=False,
        widget=forms.NumberInput(attrs={"step": "any", "min": 0, "max": 1, "placeholder": "0"}),
        help_text="Harm tolerated relative to the baseline: 0.05 = up to 5% worse.",
    )

    def __init__(self, *args: Any, metric_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["metric"].choices = [("", "choose a metric")] + metric_choices


StepFormSet = formset_factory(StepForm, formset=BaseFormSet, extra=0, can_delete=True)
MetricFormSet = formset_factory(MetricRowForm, formset=BaseFormSet, extra=0, can_delete=True)


class ReleaseEditor:
    """The new-release form: the release's fields, its steps and its metrics."""

    def __init__(
        self,
        project: Project,
        *,
        flags: dict[str, dict[str, Any]],
        environments: list[Environment],
        data: Any = None,
        initial: dict[str, Any] | None = None,
    ) -> None:
        self.project = project
        initial = initial or {}
        self.form = ReleaseForm(data, flags=flags, environments=environments, initial=initial)
        defaults = KIND_STEPS.get(initial.get("kind"), DEFAULT_CANARY_STEPS)
        self.steps = StepFormSet(data, prefix="steps", initial=[dict(s) for s in defaults])
        metrics = Metric.objects.filter(project=project).order_by("key")
        choices = [(m.key, metric_label(m)) for m in metrics]
        self.has_metrics = bool(choices)
        self.metrics = MetricFormSet(
            data,
            prefix="metrics",
            initial=[{"role": ReleaseMetricRole.GUARDRAIL}] if choices else [],
            form_kwargs={"metric_choices": choices},
        )
        self._step_rows: list[forms.Form] = []
        self._metric_rows: list[forms.Form] = []

    def is_valid(self) -> bool:
        valid = self.form.is_valid() & self.steps.is_valid() & self.metrics.is_valid()
        if valid:
            self._step_rows = kept_rows(self.steps)
            self._metric_rows = [f for f in kept_rows(self.metrics) if f.cleaned_data["metric"]]
        return valid

    @property
    def error_count(self) -> int:
        return (
            len(self.form.errors)
            + sum(len(f.errors) for f in self.steps.forms)
            + len(self.steps.non_form_errors())
            + sum(len(f.errors) for f in self.metrics.forms)
            + len(self.metrics.non_form_errors())
        )

    def service_arguments(self) -> dict[str, Any]:
        """Keyword arguments of release_create, besides project, flag, environment and actor."""
        data = self.form.cleaned_data
        return {
            "variation": data["variation"],
            "baseline_variation": data["baseline_variation"] or None,
            "kind": data["kind"],
            "steps": [
                {k: f.cleaned_data[k] for k in ("percent", "min_minutes", "min_units")}
                for f in self._step_rows
            ],
            "metrics": [
                {
                    "metric": f.cleaned_data["metric"],
                    "role": f.cleaned_data["role"],
                    "non_inferiority_margin": f.cleaned_data["non_inferiority_margin"],
                }
                for f in self._metric_rows
            ],
            "alpha": data["alpha"],
            "auto_rollback": data["auto_rollback"],
            "analysis_interval_seconds": data["analysis_interval_seconds"],
            "start_at": data["start_at"],
            "description": data["description"],
        }

    def add_error(self, exc: Exception) -> None:
        """Put a service's refusal next to the field it names (a step's or a metric's row for
        ``steps[i].x`` and ``metrics[i].x``)."""
        if isinstance(exc, DomainError):
            items = [(exc.field or "", [exc.message])]
        elif isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
            items = list(exc.message_dict.items())
        elif isinstance(exc, PermissionDenied):
            items = [("", [str(exc) or "Your role may not start this release."])]
        else:
            items = [("", list(getattr(exc, "messages", [str(exc)])))]
        for name, messages in items:
            for message in messages:
                self._place(name, message)

    def _place(self, name: str, message: str) -> None:
        row = ROW_FIELD.match(name)
        if row:
            rows = self._step_rows if row.group(1) == "steps" else self._metric_rows
            index, column = int(row.group(2)), row.group(3)
            if index < len(rows):
                form = rows[index]
                form.add_error(column if column in form.fields else None, message)
                return
        root = name.split(".")[0].split("[")[0]
        if root == "steps":
            self.steps.non_form_errors().append(message)
        elif root == "metrics":
            self.metrics.non_form_errors().append(message)
        elif root in self.form.fields:
            self.form.add_error(root, message)
        else:
            self.form.add_error(None, message)


class ActionForm(forms.Form):
    """Pause, resume, advance or roll back: an optional reason, and the confirmation."""

    reason = forms.CharField(required=False, max_length=1000)
    confirmed = forms.CharField(required=False)

    @property
    def is_confirmed(self) -> bool:
        return self.is_valid() and self.cleaned_data["confirmed"] == "yes"
