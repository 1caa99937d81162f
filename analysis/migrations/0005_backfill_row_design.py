"""Backfill the design of result rows stored before the pipeline kept it in ``details``.

Treatment rows written before the pipeline stored how each comparison was set up (``margin``,
``tuning_n``, ``planned_n``, ``previous_fractions``, ``alpha_good``, ``alpha_bad`` in
``details``; the row's ``alpha``) exported nulls in those columns. This re-derives them from the
experiment's definition by the rules of docs/statistics.md section 12, as
``analysis.policy.Plan`` applies them, best effort: the definition as it is now (a margin or
weight changed since is not known), and keys already present are never overwritten.
"""

from django.db import migrations
from django.db.models import Q

ALPHA_SRM = 0.001  # the rollback budget's share for the sample-ratio check
DEFAULT_TUNING_N = 5000  # confidence-sequence tuning size without a planned sample


def _definition(apps, experiment_id: int) -> dict:
    Experiment = apps.get_model("experiments", "Experiment")
    Variant = apps.get_model("experiments", "Variant")
    ExperimentMetric = apps.get_model("experiments", "ExperimentMetric")
    experiment = Experiment.objects.get(pk=experiment_id)
    variants = list(Variant.objects.filter(experiment_id=experiment_id))
    metrics = {
        em.metric.key: (em.role, em.non_inferiority_margin)
        for em in ExperimentMetric.objects.filter(experiment_id=experiment_id).select_related(
            "metric"
        )
    }
    roles = [role for role, _ in metrics.values()]
    return {
        "alpha": experiment.alpha,
        "planned": experiment.planned_sample_size,
        "do_no_harm": experiment.decision_policy == "do_no_harm",
        "weights": {v.key: v.weight for v in variants},
        "control": next((v.key for v in variants if v.is_control), None),
        "metrics": metrics,
        "primaries": roles.count("primary"),
        "guardrails": roles.count("guardrail"),
    }


def row_design(definition: dict, row, snapshot, fcr_level: float) -> dict:
    """The design of one treatment row: the documented rules applied to the definition."""
    alpha = definition["alpha"]
    weights, control = definition["weights"], definition["control"]
    arms = max(len(weights) - 1, 1)
    role, configured = definition["metrics"].get(row.metric_key, (row.role, None))
    harm = (alpha - ALPHA_SRM) / max((definition["primaries"] + definition["guardrails"]) * arms, 1)
    planned = None
    if definition["planned"] and control in weights and row.variant in weights:
        share = (weights[control] + weights[row.variant]) / (sum(weights.values()) or 1.0)
        planned = max(2, round(definition["planned"] * share))
    if role == "guardrail" or (role == "primary" and definition["do_no_harm"]):
        good, bad, margin = alpha, harm, configured or 0.0
        level = 2 * harm if role == "guardrail" else min(2 * alpha, 0.999)
    elif role == "primary":
        good = alpha / (2.0 * max(definition["primaries"], 1) * arms)
        bad, margin, level = harm, None, 2 * good
    else:  # secondary: both sides at half the false-coverage-rate level
        good = bad = fcr_level / 2.0
        margin, level = None, fcr_level
    looks = (snapshot.looks or {}).get(row.variant, []) if planned else []
    return {
        "alpha": level,
        "details": {
            "margin": margin,
            "tuning_n": planned or DEFAULT_TUNING_N,
            "planned_n": planned,
            "previous_fractions": [float(x) for x in looks],
            "alpha_good": good,
            "alpha_bad": bad,
        },
    }


def backfill_row_design(apps, schema_editor=None) -> int:
    """Fill the design of treatment rows lacking it; returns how many rows changed."""
    ResultRow = apps.get_model("analysis", "ResultRow")
    ResultSnapshot = apps.get_model("analysis", "ResultSnapshot")
    lacking = ResultRow.objects.filter(is_control=False).filter(
        Q(alpha__isnull=True) | ~Q(details__has_key="tuning_n")
    )
    snapshot_ids = sorted(set(lacking.values_list("snapshot_id", flat=True)))
    definitions: dict[int, dict] = {}
    changed = 0
    for snapshot in ResultSnapshot.objects.filter(pk__in=snapshot_ids).iterator(chunk_size=200):
        if snapshot.experiment_id not in definitions:
            definitions[snapshot.experiment_id] = _definition(apps, snapshot.experiment_id)
        definition = definitions[snapshot.experiment_id]
        rows = list(ResultRow.objects.filter(snapshot_id=snapshot.pk, is_control=False))
        secondaries = [
            r
            for r in rows
            if definition["metrics"].get(r.metric_key, (r.role,))[0] == "secondary"
            and not (r.details or {}).get("error")
        ]
        rejected = sum(
            1
            for r in secondaries
            if r.adjusted_p_value is not None and r.adjusted_p_value < definition["alpha"]
        )
        fcr = definition["alpha"] * max(rejected, 1) / max(len(secondaries), 1)
        for row in rows:
            details = dict(row.details or {})
            if row.alpha is not None and "tuning_n" in details:
                continue
            design = row_design(definition, row, snapshot, fcr)
            for key, value in design["details"].items():
                details.setdefault(key, value)
            row.details = details
            if row.alpha is None:
                row.alpha = design["alpha"]
            row.save(update_fields=["details", "alpha"])
            changed += 1
    return changed


class Migration(migrations.Migration):
    dependencies = [
        ("analysis", "0004_snapshot_cause"),
    ]

    operations = [
        migrations.RunPython(backfill_row_design, migrations.RunPython.noop),
    ]
