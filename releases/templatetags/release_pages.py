"""Template helpers of the release pages, and the "Releases" section of a flag's page (the
flag's releases and a "Start a release" link).

The flag page's section is an inclusion tag rather than a flags view's context: flags sit below
releases (import-linter's layers), so the flag page asks this higher layer through its template.
"""

import math
from typing import Any

from django import template

from releases.models import Release, ReleaseKind
from releases.page import decision_of
from releases.selectors import releases_for_flag, step_percent

register = template.Library()

KIND_SHORT = {ReleaseKind.CANARY: "Canary", ReleaseKind.BLUE_GREEN: "Blue-green"}


@register.inclusion_tag("releases/_flag_releases.html", takes_context=True)
def flag_releases(context: dict[str, Any], flag: Any, environment: Any = None) -> dict[str, Any]:
    return {
        "project": context.get("project"),
        "flag": flag,
        "environment": environment,
        "rows": [(r, decision_of(r)) for r in releases_for_flag(flag)],
        "may_start": bool(context.get("can_edit")) and not flag.archived,
    }


@register.filter
def release_kind(release: Release) -> str:
    return KIND_SHORT.get(release.kind, release.kind)


@register.simple_tag
def release_step(release: Release) -> str:
    """'step 2 of 5 · 5%'."""
    percent = step_percent(release)
    total = len(release.steps or [])
    where = f"step {release.step + 1} of {total}" if total else "no steps"
    return f"{where} · {percent:g}%" if percent is not None else where


@register.filter
def sig(value: Any, digits: int = 4) -> str:
    """A number to ``digits`` significant digits ('—' for none)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "—"
    return f"{value:.{int(digits)}g}"


@register.filter
def signed_percent(value: Any) -> str:
    """0.0213 -> '+2.1%'."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    return f"{value * 100:+.1f}%"
