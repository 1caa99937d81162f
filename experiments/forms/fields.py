"""Shared pieces of the forms: the JSON text field, fractions, and putting a service's
refusal next to the field it names."""

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from core.errors import DomainError


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


class TagsField(forms.CharField):
    """Tags typed as comma-separated words; the service checks them (check_tags)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list | tuple):
            return [str(v).strip() for v in value if str(v).strip()]
        text = super().to_python(value) or ""
        return [part.strip() for part in text.split(",") if part.strip()]

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return value


def _fraction(label: str, *, minimum: float = 0.0, **kwargs: Any) -> forms.FloatField:
    return forms.FloatField(
        label=label,
        min_value=minimum,
        max_value=1,
        widget=forms.NumberInput(attrs={"step": "any", "min": minimum, "max": 1}),
        **kwargs,
    )


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
