"""A guarded release in production while a project holdout runs: the holdout's units never get
the rollout, so the step's sides leave them out; left in, they would all count as baseline and
the step's sample-ratio check would hold the release for good."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from assignments.models import FlagExposure
from assignments.services.holdout_exposures import holdout_exposures_record
from bucketing.holdout import HOLDOUT, arm
from experiments.holdouts import served_holdout
from experiments.models import Environment
from experiments.services.holdouts import holdout_create, holdout_end, holdout_start
from flags.services import flag_create
from releases import aggregation as agg
from stats import srm_test

pytestmark = pytest.mark.django_db


def test_the_steps_sides_leave_out_the_holdouts_units(project):
    production = Environment.objects.get(project=project, key="production")
    staging = Environment.objects.get(project=project, key="staging")
    flag = flag_create(project=project, key="new-checkout", name="New checkout")
    holdout = holdout_start(holdout=holdout_create(project=project, name="H", share=0.2))
    holdout.started_at = timezone.now() - timedelta(hours=1)
    holdout.save()
    served = served_holdout(project.pk)
    rng = np.random.default_rng(3)
    at = timezone.now() - timedelta(minutes=10)
    rows, held = [], 0
    for i in range(2000):
        unit = f"u{i}"
        in_holdout = arm(served.spec, unit) == HOLDOUT
        held += in_holdout
        # the rollout at 50% reaches half of everyone but the holdout, who get the baseline
        variation = "off" if in_holdout or rng.random() < 0.5 else "on"
        rows.append(FlagExposure(project=project, event_id=f"e{i}", environment=production,
                                 flag=flag, variation=variation, unit_id=unit, ts=at))  # fmt: skip
    FlagExposure.objects.bulk_create(rows)
    holdout_exposures_record(holdout=served, units=[(r.unit_id, r.ts) for r in rows])
    window = {
        "environment_id": production.pk,
        "flag_id": flag.pk,
        "variations": ["off", "on"],
        "start": at - timedelta(minutes=1),
        "end": at + timedelta(minutes=1),
    }
    counts = agg.window_counts(**window)
    assert counts["off"] + counts["on"] == 2000 - held and held > 300
    assert srm_test([counts["off"], counts["on"]], [0.5, 0.5]).p_value > 0.001
    assert srm_test([counts["off"] + held, counts["on"]], [0.5, 0.5]).p_value < 0.001
    # other environments and a window outside the holdout's life keep every unit
    assert sum(agg.window_counts(**{**window, "environment_id": staging.pk}).values()) == 0
    holdout = holdout_end(holdout=holdout)
    holdout.ended_at = at - timedelta(minutes=5)
    holdout.save()
    after = agg.window_counts(**window)
    assert after["off"] + after["on"] == 2000


def test_a_release_completed_while_a_holdout_runs_keeps_its_rule_so_the_holdout_keeps_the_baseline(
    project, admin_user
):
    """Completing a release normally makes the new variation the default, which would reach the
    holdout's units; with a holdout running in production the rule stays at 100% instead, and
    the holdout's units keep the baseline (without one, the default changes as before)."""
    from bucketing.flags import evaluate_flag
    from flags.models import FlagEnvironment
    from flags.selectors import environment_flags
    from flags.services import flag_environment_update
    from releases.services import release_advance, release_create

    production = Environment.objects.get(project=project, key="production")
    flags = {}
    for key in ("with-holdout", "without"):
        flags[key] = flag_create(project=project, key=key, name=key, actor=admin_user)
        flag_environment_update(flag=flags[key], environment=production, actor=admin_user,
                                enabled=True, default_variation="off")  # fmt: skip
    steps = [{"percent": 50, "min_minutes": 0, "min_units": 0}]

    def complete(flag):
        release = release_create(project=project, flag=flag, environment=production,
                                 variation="on", steps=steps, actor=admin_user)  # fmt: skip
        while release.status != "completed":
            release = release_advance(release=release, actor=admin_user)
        return FlagEnvironment.objects.get(flag=flag, environment=production)

    assert complete(flags["without"]).default_variation == "on"
    holdout_start(holdout=holdout_create(project=project, name="H", share=0.1))
    config = complete(flags["with-holdout"])
    assert config.default_variation == "off"
    [rule] = config.rules
    assert rule["type"] == "rollout" and rule["weights"]["on"] == 1.0
    served = environment_flags(production)
    spec, holdout = served.specs["with-holdout"], served.holdout.spec
    for i in range(500):
        unit = f"u{i}"
        result = evaluate_flag(spec, {"id": unit}, served.specs)
        assert result.variation == ("off" if holdout.holds(unit) else "on")
