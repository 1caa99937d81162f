"""Domain errors: a broken rule, phrased for the person who has to fix it."""


class DomainError(Exception):
    """A state rule was broken; the message says what to fix. Rendered as HTTP 400 (by
    config.api's exception handler), or shown next to the form field it names."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
