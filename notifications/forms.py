"""Forms of the notification pages: shape only; the services check the rules (targets, events,
membership)."""

from django import forms

from notifications.models import ChannelKind, Event


class ChannelForm(forms.Form):
    kind = forms.ChoiceField(choices=ChannelKind.choices, initial=ChannelKind.SLACK)
    name = forms.CharField(max_length=100, help_text="E.g. #releases or the on-call list.")
    target = forms.CharField(
        max_length=1000,
        label="Webhook URL or email addresses",
        help_text="A Slack (or compatible) incoming-webhook URL, or comma-separated emails.",
    )
    events = forms.MultipleChoiceField(
        choices=Event.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: every event.",
    )


class PreferenceForm(forms.Form):
    email = forms.BooleanField(required=False, label="Email me about this project")
    events = forms.MultipleChoiceField(
        choices=Event.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="Events",
    )
