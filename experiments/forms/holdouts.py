"""The holdout's form: the share typed in percent, the seed optional (random) and frozen once
the holdout has started."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from core.errors import DomainError
from experiments.forms.fields import add_error_to_form
from experiments.models import Holdout
from experiments.services.holdouts import HOLDOUT_MAX_SHARE, SEED_MAX_LENGTH


class HoldoutForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    share = forms.FloatField(
        label="Share held out (%)",
        min_value=0.01,
        max_value=HOLDOUT_MAX_SHARE * 100,
        widget=forms.NumberInput(attrs={"step": "0.01"}),
        help_text=f"Units kept out of every experiment and rollout: 0.01% to "
        f"{HOLDOUT_MAX_SHARE:.0%}. 5 is typical; frozen once started.",
    )
    seed = forms.CharField(
        max_length=SEED_MAX_LENGTH,
        required=False,
        help_text="The holdout's own hash seed; leave blank for a random one. Frozen once started.",
    )

    def __init__(self, *args: Any, holdout: Holdout | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if holdout is not None and holdout.status != "draft":
            self.fields["share"].disabled = True
            self.fields["seed"].disabled = True

    @staticmethod
    def initial_for(holdout: Holdout) -> dict[str, Any]:
        return {
            "name": holdout.name,
            "description": holdout.description,
            "share": round(holdout.share * 100, 6),
            "seed": holdout.seed,
        }

    def service_arguments(self) -> dict[str, Any]:
        """The changed-or-given fields as the services take them (share as a fraction)."""
        data = {n: v for n, v in self.cleaned_data.items() if not self.fields[n].disabled}
        if "share" in data:
            data["share"] = round(data["share"] / 100, 8)
        if not data.get("seed"):
            data.pop("seed", None)
        return data

    def add_domain_error(self, exc: DomainError | ValidationError) -> None:
        add_error_to_form(self, exc)
