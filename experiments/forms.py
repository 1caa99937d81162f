"""Forms of the PM web UI. They check shape (types, ranges, weights sum to 1); the services
enforce the state rules, and their DomainError lands on the field it names."""

import json
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.forms.formsets import BaseFormSet, formset_factory

from bucketing.conditions import validate_condition
from core.errors import DomainError
from experiments.models import (
    ApiKeyScope,
    DecisionPolicy,
    Direction,
    Experiment,
    ExperimentStatus,
    Metric,
    MetricKind,
    MetricRole,
    Project,
    Role,
)
from experiments.services import (
    FROZEN_WHEN_LIVE,
    MAX_CONVERSION_WINDOW_HOURS,
    MAX_MDE,
    MAX_PLANNED_SAMPLE_SIZE,
    MAX_RAMP_STAGE_HOURS,
    WEIGHT_TOLERANCE,
)

# Path segments of the pages that an experiment key would shadow.
RESERVED_KEYS = ("new",)
HASH_ATTRIBUTES = ("id", "user_id", "device_id", "anonymous_id", "session_id", "company_id")


class JSONTextField(forms.CharField):
    """JSON typed as text. Blank means ``empty``; errors say where the JSON breaks."""

    def __init__(self, *, empty: Any = None, **kwargs: Any) -> None:
        self.empty = empty
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}))
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return self.empty
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}). "
                'Strings need double quotes, e.g. {"color": "blue"}.'
            ) from exc

    def validate(self, value: Any) -> None:  # a parsed value; CharField's checks don't apply
        if self.required and value == self.empty:
            raise ValidationError(self.error_messages["required"], code="required")

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if value is None or value == self.empty:
            return ""
        return json.dumps(value, indent=None if isinstance(value, str | int | float) else 1)

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(data) != (initial if initial is not None else self.empty)
        except ValidationError:
            return True


def _fraction(label: str, *, minimum: float = 0.0, **kwargs: Any) -> forms.FloatField:
    return forms.FloatField(
        label=label,
        min_value=minimum,
        max_value=1,
        widget=forms.NumberInput(attrs={"step": "any", "min": minimum, "max": 1}),
        **kwargs,
    )


# --- experiment definition ------------------------------------------------------------------


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
    layer = forms.CharField(
        max_length=64,
        required=False,
        help_text="Optional: experiments in one layer with disjoint ranges never share a unit.",
    )
    layer_start = _fraction("Layer range from", initial=0.0)
    layer_end = _fraction("to", initial=1.0)
    alpha = forms.FloatField(
        min_value=0.0001,
        max_value=0.49,
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
                self.fields[
                    "targeting"
                ].help_text += (
                    " Changing it while live starts a new phase: the analysis window resets."
                )

    @property
    def is_live(self) -> bool:
        return self.experiment is not None and self.experiment.status != ExperimentStatus.DRAFT

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        if key in RESERVED_KEYS:
            raise ValidationError(f"'{key}' is reserved by the web pages; choose another key.")
        return key

    def clean_targeting(self) -> Any:
        targeting = self.cleaned_data["targeting"]
        problems = validate_condition(targeting)
        if problems:
            raise ValidationError(problems)
        return targeting

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("layer_start"), data.get("layer_end")
        if start is not None and end is not None and not start < end:
            self.add_error("layer_end", "The end of the layer range must be above its start.")
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
        rows = _rows(self)
        if len(rows) < 2:
            raise ValidationError("Add at least two variants: a control and a treatment.")
        keys = [r["key"] for r in rows]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValidationError(f"Variant keys must be unique: {', '.join(duplicates)}.")
        controls = sum(1 for r in rows if r["is_control"])
        if controls != 1:
            raise ValidationError(
                f"Tick exactly one variant as the control (now {controls} are ticked)."
            )
        total = sum(r["weight"] for r in rows)
        if abs(total - 1) > WEIGHT_TOLERANCE:
            raise ValidationError(
                f"Weights must sum to 1; they sum to {total:g}. "
                "For an even split of two variants use 0.5 and 0.5."
            )


VariantFormSet = formset_factory(VariantForm, formset=BaseVariantFormSet, extra=0, can_delete=True)


class ExperimentMetricForm(forms.Form):
    metric = forms.ChoiceField()
    role = forms.ChoiceField(choices=MetricRole.choices, initial=MetricRole.PRIMARY)
    non_inferiority_margin = forms.FloatField(
        label="Margin",
        min_value=0,
        max_value=0.99,
        required=False,
        widget=forms.NumberInput(attrs={"step": "any", "min": 0, "max": 0.99}),
        help_text="Guardrails: relative harm tolerated, 0.02 = 2%.",
    )

    def __init__(self, *args: Any, metric_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["metric"].choices = [("", "choose a metric")] + metric_choices


class BaseExperimentMetricFormSet(BaseFormSet):
    def clean(self) -> None:
        if any(self.errors):
            return
        keys = [r["metric"] for r in _rows(self)]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValidationError(f"Each metric may appear once: {', '.join(duplicates)}.")


ExperimentMetricFormSet = formset_factory(
    ExperimentMetricForm, formset=BaseExperimentMetricFormSet, extra=0, can_delete=True
)


class RampStageForm(forms.Form):
    coverage = _fraction("Coverage", minimum=0.0001)
    min_hours = forms.FloatField(
        label="Minimum hours",
        min_value=0,
        max_value=MAX_RAMP_STAGE_HOURS,
        initial=24,
        widget=forms.NumberInput(attrs={"step": "any", "min": 0, "max": MAX_RAMP_STAGE_HOURS}),
    )


class BaseRampFormSet(BaseFormSet):
    def clean(self) -> None:
        if any(self.errors):
            return
        previous = 0.0
        for i, row in enumerate(_rows(self)):
            if row["coverage"] <= previous:
                raise ValidationError(
                    f"Each ramp stage must raise coverage (stage {i + 1} is {row['coverage']:g}, "
                    f"after {previous:g})."
                )
            previous = row["coverage"]


RampFormSet = formset_factory(RampStageForm, formset=BaseRampFormSet, extra=0, can_delete=True)

FORM_FIELDS = tuple(ExperimentForm.base_fields)


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


# --- lifecycle actions ----------------------------------------------------------------------


class RampForm(forms.Form):
    coverage = _fraction("New coverage", minimum=0.0001)


class ConcludeForm(forms.Form):
    decision = forms.ChoiceField(label="Decision")

    def __init__(self, *args: Any, experiment: Experiment, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["decision"].choices = [
            (v.key, f"Keep control ({v.key})" if v.is_control else f"Ship {v.key}")
            for v in experiment.variants.all()
        ]


class RollbackForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False)


# --- metric catalog -------------------------------------------------------------------------


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
                for name in ("conversion_window_hours", "winsorize_quantile", "cuped"):
                    self.fields[name].disabled = True

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("kind") == MetricKind.RATIO and not data.get("denominator_event"):
            self.add_error("denominator_event", "A ratio metric needs a denominator event.")
        return data

    def service_arguments(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in self.cleaned_data.items()
            if not self.fields[name].disabled
        }

    def add_domain_error(self, exc: DomainError | ValidationError) -> None:
        add_error_to_form(self, exc)


def add_error_to_form(form: forms.Form, exc: DomainError | ValidationError) -> None:
    if isinstance(exc, DomainError):
        field = exc.field if exc.field in form.fields else None
        form.add_error(field, exc.message)
        return
    if hasattr(exc, "error_dict"):
        for field, messages in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, messages)
    else:
        form.add_error(None, exc.messages)


# --- projects and settings ------------------------------------------------------------------


class ProjectForm(forms.Form):
    slug = forms.SlugField(max_length=64, help_text="Short identifier used in URLs and the API.")
    name = forms.CharField(max_length=200)


class ProjectSettingsForm(forms.Form):
    name = forms.CharField(max_length=200)
    webhook_url = forms.URLField(
        required=False,
        assume_scheme="https",
        help_text=(
            "Optional: abacus POSTs rollbacks, ramp steps, recommendation changes and "
            "sample-ratio mismatch alerts here (signed; see the Webhook section)."
        ),
    )


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.EDITOR)
    email = forms.EmailField(required=False, help_text="For a new account only.")
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Only to create an account for someone who has none yet.",
    )


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Which service uses it, e.g. checkout-api.")
    scopes = forms.MultipleChoiceField(
        choices=ApiKeyScope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiKeyScope.ASSIGN, ApiKeyScope.INGEST],
    )
