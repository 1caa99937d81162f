"""Every URL pattern Django routes, as a template and as concrete URLs built from fixtures."""

import re
from dataclasses import dataclass, field

from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.regex_helper import normalize

# A named group whose body is a list of literal words, e.g. (?P<action>start|pause|resume).
_CHOICES = re.compile(r"\(\?P<(\w+)>([\w-]+(?:\|[\w-]+)+)\)")


@dataclass(frozen=True)
class Endpoint:
    template: str  # "api/v1/projects/{project}/experiments/{key}/results"
    regex: str  # the full pattern Django matches (no leading ^)
    view: str  # dotted path of the view
    params: tuple[str, ...]
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, hash=False)


def _walk(patterns: list, prefix: str = "") -> list[tuple[str, URLPattern]]:
    found = []
    for p in patterns:
        regex = p.pattern.regex.pattern.removeprefix("^")
        if isinstance(p, URLResolver):
            found.extend(_walk(p.url_patterns, prefix + regex))
        else:
            found.append((prefix + regex, p))
    return found


def all_endpoints() -> list[Endpoint]:
    """One Endpoint per URL pattern, in resolver order."""
    endpoints = []
    for regex, pattern in _walk(get_resolver().url_patterns):
        cleaned = regex.replace(r"\Z", "").removesuffix("$")
        fmt, params = normalize(cleaned)[0]
        template = fmt % {name: f"{{{name}}}" for name in params}
        choices = {name: tuple(body.split("|")) for name, body in _CHOICES.findall(regex)}
        endpoints.append(
            Endpoint(
                template=template,
                regex=regex,
                view=pattern.lookup_str,
                params=tuple(params),
                choices=choices,
            )
        )
    return endpoints


class MissingFixture(LookupError):
    """A URL parameter the tests have no value for: the endpoint cannot be exercised."""


def concrete_urls(endpoint: Endpoint, values: dict[str, str]) -> list[str]:
    """The URLs that exercise an endpoint: one per choice of a literal-alternatives parameter.

    `values` maps parameter names to fixture values; `key` means an experiment key except right
    after "metrics/", where it means a metric key (values["metric_key"]).
    """
    urls = [endpoint.template]
    for name in endpoint.params:
        if name in endpoint.choices:
            options = list(endpoint.choices[name])
        else:
            value = values.get(name)
            if name == "key" and re.search(r"metrics/\{key\}", endpoint.template):
                value = values.get("metric_key")
            if value is None:
                raise MissingFixture(
                    f"no fixture value for URL parameter '{name}' of {endpoint.template!r}"
                )
            options = [value]
        urls = [u.replace(f"{{{name}}}", option, 1) for u in urls for option in options]
    return ["/" + u for u in urls]
