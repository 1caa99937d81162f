"""The rules editor of a flag in one environment: ordered rules (force, rollout, experiment)
with the condition builder and rollout sliders (static/abacus/flags.js), and the default."""

import re
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from experiments.models import Experiment, Segment
from experiments.views.pages import Page, project_page
from flags import forms, services
from flags.models import Flag, FlagEnvironment
from flags.selectors import environment_get, flag_get
from flags.views.common import REFUSALS, refusal_text, report_change
from flags.views.reads import variation_keys

RULE_FIELD = re.compile(r"^rules\[(\d+)\](?:\.(\w+))?")


class RulesEditor:
    """The environment form (default variation, comment) and the rule rows, as one unit."""

    def __init__(self, flag: Flag, config: FlagEnvironment | None, data: Any = None) -> None:
        keys = variation_keys(flag)
        project = flag.project
        kwargs = {
            "variations": keys,
            "segments": [
                (s.key, f"{s.name} ({s.key})") for s in Segment.objects.filter(project=project)
            ],
            "experiments": [
                (e.key, f"{e.name} ({e.key}, {e.get_status_display().lower()})")
                for e in Experiment.objects.filter(project=project).order_by("key")
            ],
        }
        bound = data is not None
        rules = config.rules if config is not None else []
        default = config.default_variation if config is not None else flag.off_variation
        self.form = forms.EnvironmentRulesForm(
            data, variations=keys, initial={"default_variation": default}
        )
        self.rules = forms.RuleFormSet(
            data,
            prefix="rules",
            form_kwargs=kwargs,
            initial=None if bound else [forms.rule_initial(r, keys) for r in rules],
        )
        self.variations = keys
        self.refusals: list[str] = []

    def is_valid(self) -> bool:
        return all([self.form.is_valid(), self.rules.is_valid()])

    def add_error(self, exc: Exception) -> None:
        """A service's refusal goes next to the field it names: ``rules[i].<field>`` on the
        i-th kept rule, ``default_variation`` on its select, anything else above the form."""
        field = getattr(exc, "field", None) or ""
        message = refusal_text(exc)
        match = RULE_FIELD.match(field)
        kept = forms.kept_rows(self.rules) if self.rules.is_bound else []
        if field == "default_variation":
            self.form.add_error("default_variation", message)
        elif match and int(match[1]) < len(kept):
            form, name = kept[int(match[1])], match[2]
            form.add_error(name if name in form.fields else None, message)
        else:
            self.refusals.append(message)

    @property
    def error_count(self) -> int:
        count = len(self.form.errors) + len(self.refusals)
        if self.rules.is_bound:
            count += len(self.rules.non_form_errors()) + sum(len(e) for e in self.rules.errors)
        return count


@project_page("edit")
def flag_rules(request: HttpRequest, page: Page, flag: str, environment: str) -> HttpResponse:
    flag = flag_get(page.project, flag)
    env = environment_get(page.project, environment)
    config = FlagEnvironment.objects.filter(flag=flag, environment=env).first()
    editor = RulesEditor(flag, config, data=request.POST or None)
    if request.method == "POST" and editor.is_valid():
        try:
            result = services.flag_environment_update(
                flag=flag,
                environment=env,
                actor=request.user,
                default_variation=editor.form.cleaned_data["default_variation"],
                rules=editor.rules.rules(),
                comment=editor.form.cleaned_data["comment"],
            )
        except REFUSALS as exc:
            editor.add_error(exc)
        else:
            report_change(request, result, f"Rules of {flag.key} in {env.name} saved.")
            return redirect(f"/p/{page.project.slug}/flags/{flag.key}/?env={env.key}")
    return page.render(
        "flags/flag_rules.html",
        {"flag": flag, "environment": env, "config": config, "editor": editor},
    )
