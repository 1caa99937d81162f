"""The experiment form with its rows, as one unit for the create and edit pages."""

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from core.errors import DomainError
from experiments.forms.experiments import (
    FORM_FIELDS,
    ExperimentForm,
    ExperimentMetricFormSet,
    RampFormSet,
    VariantFormSet,
    _rows,
)
from experiments.models import Experiment, Metric, MetricRole, Project


class ExperimentEditor:
    """The experiment form with its variant, metric and ramp-stage rows, as one unit."""

    def __init__(
        self,
        project: Project,
        experiment: Experiment | None = None,
        data: Any = None,
        owner: str = "",
    ) -> None:
        self.project = project
        self.experiment = experiment
        metric_choices = [
            (m.key, f"{m.name} ({m.key}, {m.get_kind_display().lower()})")
            for m in Metric.objects.filter(project=project)
        ]
        initial, variants, metrics, stages = self._initial(experiment)
        if experiment is None:
            initial["owner"] = owner
        bound = data is not None
        # Disabled (frozen) fields take their value from `initial` even when bound.
        self.form = ExperimentForm(data, project=project, experiment=experiment, initial=initial)
        self.variants = VariantFormSet(data, prefix="variants", initial=None if bound else variants)
        self.metrics = ExperimentMetricFormSet(
            data,
            prefix="metrics",
            initial=None if bound else metrics,
            form_kwargs={"metric_choices": metric_choices},
        )
        self.ramp = RampFormSet(data, prefix="ramp", initial=None if bound else stages)
        self.has_metrics = bool(metric_choices)

    @property
    def variants_frozen(self) -> bool:
        return self.form.is_live

    @property
    def frozen_variants(self) -> list[tuple[Any, str]]:
        """A live experiment's variants with their values as JSON, for the read-only table."""
        if self.experiment is None:
            return []
        return [
            (v, "" if v.value is None else json.dumps(v.value, sort_keys=True))
            for v in self.experiment.variants.all()
        ]

    @staticmethod
    def _initial(experiment: Experiment | None) -> tuple[dict, list, list, list]:
        if experiment is None:
            return (
                {},
                [
                    {"key": "control", "name": "Control", "weight": 0.5, "is_control": True},
                    {"key": "treatment", "name": "Treatment", "weight": 0.5},
                ],
                [{"role": MetricRole.PRIMARY}],
                [],
            )
        initial = {name: getattr(experiment, name) for name in FORM_FIELDS if name != "owner"}
        initial["owner"] = experiment.owner.get_username() if experiment.owner_id else ""
        initial["segment"] = experiment.segment.key if experiment.segment_id else ""
        variants = [
            {
                "key": v.key,
                "name": v.name,
                "weight": v.weight,
                "is_control": v.is_control,
                "value": v.value,
            }
            for v in experiment.variants.all()
        ]
        metrics = [
            {
                "metric": em.metric.key,
                "role": em.role,
                "non_inferiority_margin": em.non_inferiority_margin,
            }
            for em in experiment.experiment_metrics.all()
        ]
        return initial, variants, metrics, list(experiment.ramp_stages or [])

    def is_valid(self) -> bool:
        parts = [self.form, self.metrics, self.ramp]
        if not self.variants_frozen:
            parts.append(self.variants)
        return all([p.is_valid() for p in parts])

    def service_arguments(self) -> dict[str, Any]:
        """Keyword arguments for experiment_create / experiment_update."""
        data = {
            name: value
            for name, value in self.form.cleaned_data.items()
            if not self.form.fields[name].disabled
        }
        username = data.pop("owner", None)
        if "owner" in self.form.cleaned_data and not self.form.fields["owner"].disabled:
            data["owner"] = (
                get_user_model().objects.filter(username=username).first() if username else None
            )
        data["metrics"] = [
            {
                "metric": r["metric"],
                "role": r["role"],
                "non_inferiority_margin": r["non_inferiority_margin"],
            }
            for r in _rows(self.metrics)
        ]
        data["ramp_stages"] = [
            {"coverage": r["coverage"], "min_hours": r["min_hours"]} for r in _rows(self.ramp)
        ]
        if not self.variants_frozen:
            data["variants"] = [
                {
                    "key": r["key"],
                    "name": r["name"],
                    "weight": r["weight"],
                    "is_control": r["is_control"],
                    "value": r["value"],
                }
                for r in _rows(self.variants)
            ]
        return data

    def add_error(self, exc: DomainError | ValidationError) -> None:
        """Put a service's refusal next to the field it is about."""
        if isinstance(exc, DomainError):
            items = [(exc.field, [exc.message])]
        elif hasattr(exc, "error_dict"):
            items = list(exc.message_dict.items())
        else:
            items = [(None, exc.messages)]
        formsets = {"variants": self.variants, "metrics": self.metrics, "ramp_stages": self.ramp}
        for field, messages in items:
            for message in messages:
                if field in formsets and not (field == "variants" and self.variants_frozen):
                    formsets[field].non_form_errors().append(message)
                elif field == "layer":
                    self.form.add_error("layer_start", message)
                elif field in self.form.fields:
                    self.form.add_error(field, message)
                else:
                    self.form.add_error(None, message)

    @property
    def error_count(self) -> int:
        count = len(self.form.errors)
        for formset in (self.variants, self.metrics, self.ramp):
            if formset.is_bound:
                count += len(formset.non_form_errors()) + sum(len(e) for e in formset.errors)
        return count
