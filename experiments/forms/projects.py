"""Projects, their settings, members and API keys."""

from typing import Any

from django import forms

from experiments.models import PRODUCTION, ApiKeyScope, Project, Role


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
    require_approval = forms.BooleanField(
        required=False,
        label="Production flag changes need approval",
        help_text="A second admin reviews each production change (a change request); turning "
        "a flag off stays immediate for admins.",
    )
    event_retention_days = forms.IntegerField(
        required=False,
        label="Keep events for (days)",
        help_text="Exposures and metric events older than this are deleted every hour and "
        "refused when sent; at least 7. Empty: keep them forever.",
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
    environment = forms.ChoiceField(
        choices=[(PRODUCTION, "Production")],
        initial=PRODUCTION,
        required=False,  # production when not given
        help_text="Whose flag rules /evaluate applies, and where its flag exposures count.",
    )
    scopes = forms.MultipleChoiceField(
        choices=ApiKeyScope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiKeyScope.ASSIGN, ApiKeyScope.INGEST],
    )

    def __init__(self, *args: Any, project: Project | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if project is not None:
            self.fields["environment"].choices = [
                (e.key, e.name) for e in project.environments.all()
            ]
