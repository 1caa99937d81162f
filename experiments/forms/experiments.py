"""The experiment form, its variant, metric and ramp-stage rows, and the lifecycle actions."""

from collections.abc import Callable
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.formsets import BaseFormSet, formset_factory

from core.errors import DomainError
from experiments.forms.fields import JSONTextField, TagsField, _fraction
from experiments.models import (
    RAMP_STAGE_DEFAULT_HOURS,
    DecisionPolicy,
    Experiment,
    ExperimentStatus,
    MetricRole,
    Project,
    Role,
)
from experiments.services import (
    ALPHA_MAX,
    ALPHA_MIN,
    FROZEN_WHEN_LIVE,
    MARGIN_MAX,
    MAX_MDE,
    MAX_PLANNED_SAMPLE_SIZE,
    MAX_RAMP_STAGE_HOURS,
    RATIONALE_MAX,
)
from experiments.services.rules import (
    check_layer,
    check_metric_entries,
    check_ramp,
    check_tags,
    check_targeting,
    check_variants,
)

# Path segments of the pages that an experiment key would shadow.
RESERVED_KEYS = ("new",)
HASH_ATTRIBUTES = ("id", "user_id", "device_id", "anonymous_id", "session_id", "company_id")


def _service_rule(check: Callable[..., None], *args: Any) -> None:
    """Apply a rule of the services (their only home) while the form is cleaned, so every
    part of the page shows its refusal at once; it becomes a ValidationError of that part."""
    try:
        check(*args)
    except DomainError as exc:
        raise ValidationError(exc.message) from exc


class ExperimentForm(forms.Form):
    key = forms.SlugField(
        max_length=100,
        help_text="Lowercase letters, digits and dashes; what SDKs and the API call it. "
        "It cannot change later.",
    )
    name = forms.CharField(max_length=200)
    hypothesis = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What you change, what you expect to move, and why.",
    )
    tags = TagsField(
        max_length=1100,
        help_text="Optional: short words, comma-separated (checkout, pricing); the library of "
        "concluded experiments filters on them.",
    )
    owner = forms.ChoiceField(required=False)
    hash_attribute = forms.CharField(
        max_length=64,
        initial="id",
        widget=forms.TextInput(attrs={"list": "hash-attributes"}),
        help_text="The attribute that identifies a unit: a unit always gets the same variant.",
    )
    coverage = _fraction(
        "Traffic coverage",
        initial=1.0,
        help_text="Share of eligible units in the experiment: 0.2 = 20%. "
        "With a ramp plan, the first stage's coverage applies at the start.",
    )
    targeting = JSONTextField(
        empty={},
        label="Targeting condition",
        help_text='Optional, GrowthBook condition syntax, e.g. {"country": {"$in": ["US", "CA"]}}.',
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
    )
    segment = forms.ChoiceField(
        required=False,
        label="Segment",
        help_text="Optional: a saved segment of this project. It is AND-ed with the targeting "
        "condition: a unit must be in the segment and match the condition.",
    )
    layer = forms.CharField(
        max_length=64,
        required=False,
        help_text="Optional: experiments in one layer with disjoint ranges never share a unit.",
    )
    layer_start = _fraction("Layer range from", initial=0.0)
    layer_end = _fraction("to", initial=1.0)
    alpha = forms.FloatField(
        min_value=ALPHA_MIN,
        max_value=ALPHA_MAX,
        initial=0.05,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text="False-positive rate; shared by the primary metrics.",
    )
    decision_policy = forms.ChoiceField(
        choices=DecisionPolicy.choices, initial=DecisionPolicy.SUPERIORITY
    )
    planned_sample_size = forms.IntegerField(
        min_value=2,
        max_value=MAX_PLANNED_SAMPLE_SIZE,
        required=False,
        help_text="Units over all variants; use the calculator below.",
    )
    mde = forms.FloatField(
        label="Minimum detectable effect",
        min_value=0,
        max_value=MAX_MDE,
        required=False,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text="Relative lift the test should detect: 0.05 = +5%.",
    )
    end_date = forms.DateTimeField(
        required=False,
        label="Planned end (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    auto_rollback = forms.BooleanField(
        required=False,
        help_text="Roll back on its own when a guardrail or primary metric shows harm, "
        "or the experiment is unhealthy.",
    )

    def __init__(
        self,
        *args: Any,
        project: Project,
        experiment: Experiment | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        self.experiment = experiment
        members = (
            project.memberships.filter(role__in=[Role.ADMIN, Role.EDITOR])
            .select_related("user")
            .order_by("user__username")
        )
        usernames = [m.user.get_username() for m in members]
        if experiment is not None and experiment.owner_id:
            current = experiment.owner.get_username()
            if current not in usernames:
                usernames.append(current)
        self.fields["owner"].choices = [("", "(nobody)")] + [(u, u) for u in usernames]
        self.fields["segment"].choices = [("", "(none)")] + [
            (key, f"{name} ({key})")
            for key, name in project.segments.order_by("key").values_list("key", "name")
        ]
        if experiment is not None:
            self.fields["key"].disabled = True
            self.fields["key"].help_text = "The key cannot change."
            if self.is_live:
                for name in (*FROZEN_WHEN_LIVE, "coverage"):
                    if name in self.fields:
                        self.fields[name].disabled = True
                self.fields[
                    "coverage"
                ].help_text = (
                    "Change coverage with Ramp on the experiment page (it may only go up)."
                )
                new_phase = (
                    " Changing it while live starts a new phase: the analysis window resets."
                )
                for name in ("targeting", "segment"):
                    self.fields[name].help_text += new_phase

    @property
    def is_live(self) -> bool:
        return self.experiment is not None and self.experiment.status != ExperimentStatus.DRAFT

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        if key in RESERVED_KEYS:
            raise ValidationError(f"'{key}' is reserved by the web pages; choose another key.")
        return key

    def clean_tags(self) -> list[str]:
        try:
            return check_tags(self.cleaned_data["tags"])
        except DomainError as exc:
            raise ValidationError(exc.message) from exc

    def clean_targeting(self) -> Any:
        targeting = self.cleaned_data["targeting"]
        _service_rule(check_targeting, targeting)
        return targeting

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("layer_start"), data.get("layer_end")
        if start is not None and end is not None:
            try:
                check_layer(start, end)
            except DomainError as exc:  # the editor files "layer" under its start, too
                self.add_error("layer_start", exc.message)
        return data


class VariantForm(forms.Form):
    key = forms.SlugField(max_length=100, widget=forms.TextInput(attrs={"placeholder": "key"}))
    name = forms.CharField(
        max_length=200, required=False, widget=forms.TextInput(attrs={"placeholder": "name"})
    )
    weight = forms.FloatField(
        min_value=0,
        max_value=1,
        widget=forms.NumberInput(attrs={"step": "any", "min": 0, "max": 1, "class": "weight"}),
    )
    is_control = forms.BooleanField(
        required=False, widget=forms.CheckboxInput(attrs={"class": "is-control"})
    )
    value = JSONTextField(
        empty=None,
        widget=forms.Textarea(
            attrs={"rows": 1, "spellcheck": "false", "placeholder": '{"color": "blue"}'}
        ),
    )


def _rows(formset: BaseFormSet) -> list[dict[str, Any]]:
    """The cleaned rows a person kept (not removed, not left blank)."""
    return [
        form.cleaned_data
        for form in formset.forms
        if form.cleaned_data and not form.cleaned_data.get("DELETE")
    ]


class BaseVariantFormSet(BaseFormSet):
    def clean(self) -> None:
        if any(self.errors):
            return
        _service_rule(check_variants, _rows(self))


VariantFormSet = formset_factory(VariantForm, formset=BaseVariantFormSet, extra=0, can_delete=True)


class ExperimentMetricForm(forms.Form):
    metric = forms.ChoiceField()
    role = forms.ChoiceField(choices=MetricRole.choices, initial=MetricRole.PRIMARY)
    non_inferiority_margin = forms.FloatField(
        label="Margin",
        min_value=0,
        max_value=MARGIN_MAX,
        required=False,
        widget=forms.NumberInput(attrs={"step": "any", "min": 0, "max": MARGIN_MAX}),
        help_text="Guardrails: relative harm tolerated, 0.02 = 2%.",
    )

    def __init__(self, *args: Any, metric_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["metric"].choices = [("", "choose a metric")] + metric_choices


class BaseExperimentMetricFormSet(BaseFormSet):
    def clean(self) -> None:
        if any(self.errors):
            return
        _service_rule(check_metric_entries, _rows(self))


ExperimentMetricFormSet = formset_factory(
    ExperimentMetricForm, formset=BaseExperimentMetricFormSet, extra=0, can_delete=True
)


class RampStageForm(forms.Form):
    coverage = _fraction("Coverage", minimum=0.0001)
    min_hours = forms.FloatField(
        label="Minimum hours",
        min_value=0,
        max_value=MAX_RAMP_STAGE_HOURS,
        initial=RAMP_STAGE_DEFAULT_HOURS,
        widget=forms.NumberInput(attrs={"step": "any", "min": 0, "max": MAX_RAMP_STAGE_HOURS}),
    )


class BaseRampFormSet(BaseFormSet):
    def clean(self) -> None:
        if any(self.errors):
            return
        _service_rule(check_ramp, _rows(self))


RampFormSet = formset_factory(RampStageForm, formset=BaseRampFormSet, extra=0, can_delete=True)

FORM_FIELDS = tuple(ExperimentForm.base_fields)


# --- lifecycle actions ----------------------------------------------------------------------


class RampForm(forms.Form):
    coverage = _fraction("New coverage", minimum=0.0001)


class ConcludeForm(forms.Form):
    decision = forms.ChoiceField(label="Decision")
    rationale = forms.CharField(
        label="Rationale",
        required=False,
        max_length=RATIONALE_MAX,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why. Required when the decision goes against the latest recommendation.",
    )

    def __init__(self, *args: Any, experiment: Experiment, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["decision"].choices = [
            (v.key, f"Keep control ({v.key})" if v.is_control else f"Ship {v.key}")
            for v in experiment.variants.all()
        ]


class RollbackForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False)
