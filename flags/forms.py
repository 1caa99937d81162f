"""Forms of the flag pages. They check shape (typed values, JSON, percentages); the services
(flags.services) enforce the rules, and their DomainError lands on the field it names."""

import json
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.forms.formsets import BaseFormSet, formset_factory

from core.errors import DomainError
from experiments.forms import JSONTextField
from experiments.models import Environment, Project, Role
from flags.models import Flag, FlagType

# Path segments of the flag pages that a flag key would shadow.
RESERVED_FLAG_KEYS = ("new",)
RULE_TYPES = [
    ("force", "Serve a variation"),
    ("rollout", "Percentage rollout"),
    ("experiment", "Experiment"),
]
SCHEDULE_ACTIONS = [
    ("enable", "Turn on"),
    ("disable", "Turn off"),
    ("rollout", "Move a rollout to N%"),
]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def typed_value(flag_type: str, text: str) -> Any:
    """A variation value typed as the flag's type; ValidationError says what was expected."""
    text = (text or "").strip() if flag_type != FlagType.STRING else (text or "")
    if flag_type == FlagType.BOOLEAN:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValidationError("A boolean flag's values are true or false.")
    if flag_type == FlagType.NUMBER:
        try:
            number = float(text)
        except ValueError:
            raise ValidationError(f"'{text}' is not a number.") from None
        return int(number) if number.is_integer() and "." not in text else number
    if flag_type == FlagType.JSON:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Not valid JSON: {exc.msg} (column {exc.colno}).") from exc
    return text


def value_text(flag_type: str, value: Any) -> str:
    """The inverse of typed_value, for the edit form and the pages."""
    if flag_type == FlagType.STRING and isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def member_choices(project: Project, current: str = "") -> list[tuple[str, str]]:
    """Admins and editors of the project (plus the current owner), for an owner select."""
    usernames = [
        m.user.get_username()
        for m in project.memberships.filter(role__in=[Role.ADMIN, Role.EDITOR])
        .select_related("user")
        .order_by("user__username")
    ]
    if current and current not in usernames:
        usernames.append(current)
    return [("", "(nobody)")] + [(u, u) for u in usernames]


class FlagForm(forms.Form):
    key = forms.SlugField(
        max_length=100,
        help_text="Lowercase letters, digits and dashes: what SDKs ask for. It cannot change.",
    )
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    type = forms.ChoiceField(
        choices=FlagType.choices,
        initial=FlagType.BOOLEAN,
        help_text="What every variation's value is: a number flag never serves a string.",
    )
    off_variation = forms.CharField(
        max_length=100,
        initial="off",
        help_text="The variation key served when the flag is off (the kill switch).",
    )
    tags = forms.CharField(
        required=False, max_length=500, help_text="Comma separated, e.g. checkout, q3."
    )
    owner = forms.ChoiceField(required=False)
    temporary = forms.BooleanField(
        required=False,
        initial=True,
        help_text="A release toggle to remove once fully rolled out (stale warnings apply).",
    )
    prerequisites = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        help_text="One per line: 'flag-key: variation, variation'. This flag is served only "
        "when each listed flag serves one of those variations; otherwise its off variation.",
    )

    def __init__(self, *args: Any, project: Project, flag: Flag | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        current = flag.owner.get_username() if flag is not None and flag.owner_id else ""
        self.fields["owner"].choices = member_choices(project, current)
        if flag is not None:
            self.fields["key"].disabled = True
            self.fields["key"].help_text = "The key cannot change."

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        if key in RESERVED_FLAG_KEYS:
            raise ValidationError(f"'{key}' is reserved by the web pages; choose another key.")
        return key

    def clean_tags(self) -> list[str]:
        tags = [t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip()]
        return list(dict.fromkeys(tags))

    def clean_prerequisites(self) -> list[dict[str, Any]]:
        parsed = []
        for number, line in enumerate(_lines(self.cleaned_data["prerequisites"]), start=1):
            flag, sep, rest = line.partition(":")
            variations = [v.strip() for v in rest.split(",") if v.strip()]
            if not sep or not flag.strip() or not variations:
                raise ValidationError(
                    f"Line {number}: write 'flag-key: variation, variation' (got '{line}')."
                )
            parsed.append({"flag": flag.strip(), "variations": variations})
        return parsed


class VariationForm(forms.Form):
    key = forms.SlugField(max_length=100, widget=forms.TextInput(attrs={"placeholder": "key"}))
    value = forms.CharField(
        required=False,
        strip=False,
        widget=forms.TextInput(attrs={"placeholder": "value", "spellcheck": "false"}),
    )


VariationFormSet = formset_factory(VariationForm, extra=0, can_delete=True)


def kept_rows(formset: BaseFormSet) -> list[forms.Form]:
    """The row forms a person kept (not removed, not left blank), in their order."""
    rows = [f for f in formset.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
    if getattr(formset, "can_order", False):
        rows.sort(key=lambda f: f.cleaned_data.get("ORDER") or 0)
    return rows


class RuleForm(forms.Form):
    """One rule of a flag in an environment; `w<i>` are the rollout's percentages of the
    flag's variations, in their order."""

    id = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    type = forms.ChoiceField(choices=RULE_TYPES, initial="force")
    segment = forms.ChoiceField(required=False)
    condition = JSONTextField(
        empty={},
        label="Condition (JSON)",
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "class": "condition-json"}),
    )
    variation = forms.ChoiceField(required=False)
    hash_attribute = forms.CharField(max_length=64, initial="id", required=False)
    experiment = forms.ChoiceField(required=False)

    def __init__(
        self,
        *args: Any,
        variations: list[str],
        segments: list[tuple[str, str]],
        experiments: list[tuple[str, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.variation_keys = variations
        self.fields["segment"].choices = [("", "(any unit)")] + segments
        self.fields["variation"].choices = [(v, v) for v in variations]
        self.fields["experiment"].choices = [("", "choose an experiment")] + experiments
        for i, key in enumerate(variations):
            self.fields[f"w{i}"] = forms.FloatField(
                label=key,
                required=False,
                min_value=0,
                max_value=100,
                widget=forms.NumberInput(
                    attrs={"step": "any", "min": 0, "max": 100, "class": "rollout-pct"}
                ),
            )

    def weight_fields(self) -> list[tuple[str, forms.BoundField]]:
        return [(key, self[f"w{i}"]) for i, key in enumerate(self.variation_keys)]

    def clean_condition(self) -> dict[str, Any]:
        condition = self.cleaned_data["condition"]
        if not isinstance(condition, dict):
            raise ValidationError('A condition is a JSON object, e.g. {"country": "US"}.')
        return condition

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind = data.get("type")
        if kind == "experiment" and not data.get("experiment"):
            self.add_error("experiment", "Choose the experiment this rule serves.")
        if kind == "rollout":
            percents = [data.get(f"w{i}") or 0.0 for i in range(len(self.variation_keys))]
            total = sum(percents)
            if abs(total - 100) > 1e-6:
                raise ValidationError(f"The rollout's shares sum to {total:g}%; they must be 100%.")
        return data

    def rule(self) -> dict[str, Any]:
        """The rule in the API's JSON shape."""
        data = self.cleaned_data
        rule: dict[str, Any] = {"type": data["type"]}
        if data.get("id"):
            rule["id"] = data["id"]
        if data["type"] == "experiment":
            rule["experiment"] = data["experiment"]
            return rule
        if data.get("condition"):
            rule["condition"] = data["condition"]
        if data.get("segment"):
            rule["segment"] = data["segment"]
        if data["type"] == "force":
            rule["variation"] = data["variation"]
        else:
            rule["hash_attribute"] = (data.get("hash_attribute") or "id").strip()
            rule["weights"] = shares(
                {k: data.get(f"w{i}") or 0.0 for i, k in enumerate(self.variation_keys)}
            )
        return rule


def shares(percents: dict[str, float]) -> dict[str, float]:
    """Percentages summing to 100 -> shares summing to 1 (the rounding left on the largest)."""
    result = {key: round(p / 100, 10) for key, p in percents.items() if p > 0}
    if result:
        largest = max(result, key=lambda k: result[k])
        result[largest] = round(1 - sum(v for k, v in result.items() if k != largest), 10)
    return result


class BaseRuleFormSet(BaseFormSet):
    ordering_widget = forms.HiddenInput

    def rules(self) -> list[dict[str, Any]]:
        return [form.rule() for form in kept_rows(self)]


RuleFormSet = formset_factory(
    RuleForm, formset=BaseRuleFormSet, extra=0, can_delete=True, can_order=True
)


def rule_initial(rule: dict[str, Any], variations: list[str]) -> dict[str, Any]:
    """A stored rule as the initial data of a RuleForm."""
    initial = {
        "id": rule.get("id", ""),
        "type": rule.get("type", "force"),
        "segment": rule.get("segment", ""),
        "condition": rule.get("condition") or {},
        "variation": rule.get("variation", ""),
        "hash_attribute": rule.get("hash_attribute", "id"),
        "experiment": rule.get("experiment", ""),
    }
    weights = rule.get("weights") or {}
    for i, key in enumerate(variations):
        initial[f"w{i}"] = round(float(weights.get(key, 0)) * 100, 8)
    return initial


class EnvironmentRulesForm(forms.Form):
    default_variation = forms.ChoiceField(
        help_text="Served when the flag is on and no rule matches."
    )
    comment = forms.CharField(
        required=False,
        max_length=500,
        help_text="Why (kept with a change request when production needs approval).",
    )

    def __init__(self, *args: Any, variations: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["default_variation"].choices = [(v, v) for v in variations]


class PreviewForm(forms.Form):
    unit_id = forms.CharField(max_length=200, label="Unit id", help_text="The `id` attribute.")
    attributes = JSONTextField(
        empty={},
        help_text='Other attributes as JSON, e.g. {"country": "US", "version": "2.1.0"}.',
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
    )

    def clean_attributes(self) -> dict[str, Any]:
        attributes = self.cleaned_data["attributes"]
        if not isinstance(attributes, dict):
            raise ValidationError('Attributes are a JSON object, e.g. {"country": "US"}.')
        return attributes


class ScheduleForm(forms.Form):
    environment = forms.ChoiceField()
    at = forms.DateTimeField(
        label="When (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    action = forms.ChoiceField(choices=SCHEDULE_ACTIONS)
    rule = forms.CharField(
        required=False, max_length=64, help_text="Rollouts: the rule id (shown on each rule)."
    )
    variation = forms.CharField(required=False, max_length=100)
    percent = forms.FloatField(
        required=False, min_value=0, max_value=100, widget=forms.NumberInput(attrs={"step": "any"})
    )
    note = forms.CharField(required=False, max_length=500)

    def __init__(self, *args: Any, environments: list[Environment], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["environment"].choices = [(e.key, e.name) for e in environments]

    def change(self) -> dict[str, Any]:
        data = self.cleaned_data
        if data["action"] != "rollout":
            return {"enabled": data["action"] == "enable"}
        return {"rule": data["rule"], "variation": data["variation"], "percent": data["percent"]}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("action") == "rollout":
            for name in ("rule", "variation", "percent"):
                if data.get(name) in (None, ""):
                    self.add_error(name, "Needed to move a rollout.")
        return data


class SegmentForm(forms.Form):
    key = forms.SlugField(max_length=100, help_text="What rules and the API call it.")
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    condition = JSONTextField(
        empty={},
        help_text="Units matching this GrowthBook condition are in the segment (empty: only "
        "the include list).",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "condition-json"}),
    )
    include = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="Unit ids always in the segment, one per line.",
    )
    exclude = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="Unit ids never in the segment, one per line (wins over both).",
    )

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editing:
            self.fields["key"].disabled = True

    def clean_condition(self) -> dict[str, Any]:
        condition = self.cleaned_data["condition"]
        if not isinstance(condition, dict):
            raise ValidationError('A condition is a JSON object, e.g. {"plan": "pro"}.')
        return condition

    def clean_include(self) -> list[str]:
        return list(dict.fromkeys(_lines(self.cleaned_data["include"])))

    def clean_exclude(self) -> list[str]:
        return list(dict.fromkeys(_lines(self.cleaned_data["exclude"])))


class ReviewForm(forms.Form):
    comment = forms.CharField(required=False, max_length=1000)


class FlagEditor:
    """The flag form with its variation rows, as one unit for the create and edit pages."""

    def __init__(self, project: Project, flag: Flag | None = None, data: Any = None) -> None:
        self.project = project
        self.flag = flag
        bound = data is not None
        self.form = FlagForm(data, project=project, flag=flag, initial=self._initial(flag))
        self.variations = VariationFormSet(
            data, prefix="variations", initial=None if bound else self._variations(flag)
        )

    @staticmethod
    def _initial(flag: Flag | None) -> dict[str, Any]:
        if flag is None:
            return {"type": FlagType.BOOLEAN, "off_variation": "off", "temporary": True}
        return {
            "key": flag.key,
            "name": flag.name,
            "description": flag.description,
            "type": flag.type,
            "off_variation": flag.off_variation,
            "tags": ", ".join(flag.tags or []),
            "owner": flag.owner.get_username() if flag.owner_id else "",
            "temporary": flag.temporary,
            "prerequisites": "\n".join(
                f"{p['flag']}: {', '.join(p['variations'])}" for p in flag.prerequisites or []
            ),
        }

    @staticmethod
    def _variations(flag: Flag | None) -> list[dict[str, Any]]:
        if flag is None:
            return [{"key": "on", "value": "true"}, {"key": "off", "value": "false"}]
        return [
            {"key": v["key"], "value": value_text(flag.type, v["value"])} for v in flag.variations
        ]

    def is_valid(self) -> bool:
        valid = all([self.form.is_valid(), self.variations.is_valid()])
        if not valid:
            return False
        flag_type = self.form.cleaned_data["type"]
        for row in kept_rows(self.variations):
            try:
                row.cleaned_data["typed"] = typed_value(flag_type, row.cleaned_data["value"])
            except ValidationError as exc:
                row.add_error("value", exc)
                valid = False
        return valid

    def service_arguments(self) -> dict[str, Any]:
        """Keyword arguments for flag_create / flag_update."""
        data = {k: v for k, v in self.form.cleaned_data.items() if not self.form[k].field.disabled}
        username = data.pop("owner", "")
        data["owner"] = (
            get_user_model().objects.filter(username=username).first() if username else None
        )
        data["variations"] = [
            {"key": row.cleaned_data["key"], "value": row.cleaned_data["typed"]}
            for row in kept_rows(self.variations)
        ]
        return data

    def add_error(self, exc: Exception) -> None:
        """Put a service's refusal next to the field it names."""
        if isinstance(exc, DomainError):
            items = [(exc.field, [exc.message])]
        elif isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
            items = list(exc.message_dict.items())
        else:
            items = [(None, getattr(exc, "messages", [str(exc)]))]
        for field, messages in items:
            root = (field or "").split(".")[0].split("[")[0]
            for message in messages:
                if root == "variations":
                    self.variations.non_form_errors().append(message)
                elif root in self.form.fields:
                    self.form.add_error(root, message)
                else:
                    self.form.add_error(None, message)

    @property
    def error_count(self) -> int:
        count = len(self.form.errors)
        if self.variations.is_bound:
            count += len(self.variations.non_form_errors())
            count += sum(len(e) for e in self.variations.errors)
        return count
