"""Sticky assignment: the variant of each unit, hashed on first sight and stored."""

from collections.abc import Mapping, Sequence
from typing import Any

from assignments.selectors import ProjectSpecs, project_specs
from assignments.services.assignment_cache import (
    cached_variants,
    remember_stored_variants,
    remember_variants,
)
from assignments.services.assignment_rows import _assignment_rows, _assignments_insert
from assignments.services.holdout_exposures import holdout_exposures_seen_now
from bucketing.conditions import eval_condition
from bucketing.payload import ExperimentSpec, evaluate, evaluate_many
from core.errors import DomainError
from experiments.models import ExperimentStatus, Project

_VECTOR_MIN = 256  # from this many units on, bucketing runs in numpy
_RUNNING = ExperimentStatus.RUNNING
_CONCLUDED = ExperimentStatus.CONCLUDED

Unit = tuple[str, Mapping[str, Any]]
Answer = dict[str, dict[str, Any]]


def assignments_get_or_create(
    *,
    project: Project,
    units: Sequence[Unit],
    experiment_keys: Sequence[str] | None = None,
) -> list[Answer]:
    """The variant of each unit in each requested experiment, stored on first sight (sticky).

    ``units`` are ``(unit_id, attributes)``; the unit id is the value of each experiment's hash
    attribute. A running experiment first applies its targeting (always, like the SDKs apply a
    rule's condition), then returns the stored assignment, else hashes the unit (coverage,
    weights, namespace) and stores the result; concurrent first calls for one unit agree on
    the stored row. Paused and rolled-back experiments give everyone control and store nothing;
    a concluded experiment gives everyone its shipped variant (control without a decision).
    Those answers carry ``"in_experiment": false``. Units not in an experiment are omitted
    for it. Unknown or draft keys raise `DomainError`; an experiment whose definition is broken
    is omitted (the selector logs it).

    With a running holdout (docs/flags.md "Holdout"), its units get no running experiment (a
    stored assignment included: nothing new is stored) and control instead of a shipped
    variant; every unit asked about is recorded as the holdout's exposure when it is in either
    arm of the comparison (`holdout_exposures`).
    """
    specs = project_specs(project)
    keys = _requested_keys(specs, experiment_keys)
    running = [k for k in keys if specs.statuses[k] == _RUNNING]
    fixed = {k: _fixed_answer(specs.specs[k]) for k in keys if k not in running}
    results: list[Answer] = [dict(fixed) for _ in units]
    held = _held_out(specs, units)
    if held:
        _hold_fixed(specs, fixed, results, units, held)
    if not running or not units:
        return results
    stored = _stored_variants(specs, running, list({unit_id for unit_id, _ in units}))
    chosen = {key: _decide(specs.specs[key], units, stored) for key in running}
    if held:
        for variants in chosen.values():
            for i, (unit_id, _) in enumerate(units):
                if unit_id in held:
                    variants[i] = None
    new_rows: dict[tuple[str, str], str] = {}
    for key, variants in chosen.items():
        for (unit_id, _), variant_key in zip(units, variants, strict=True):
            if variant_key is not None and (key, unit_id) not in stored:
                new_rows[(key, unit_id)] = variant_key
    if new_rows:
        # Another request may have stored the same unit first: its row wins, here too.
        stored.update(_store_assignments(specs, new_rows))
    for key, variants in chosen.items():
        answers = {v.key: {"variant": v.key, "value": v.value} for v in specs.specs[key].variants}
        for answer, (unit_id, _), variant_key in zip(results, units, variants, strict=True):
            if variant_key is not None:
                answer[key] = answers[stored.get((key, unit_id), variant_key)]
    return results


def _requested_keys(specs: ProjectSpecs, experiment_keys: Sequence[str] | None) -> list[str]:
    if experiment_keys is None:
        return list(specs.specs)
    unknown = [k for k in experiment_keys if k not in specs.experiment_ids]
    if unknown:
        raise DomainError(f"Unknown or draft experiment(s): {', '.join(unknown)}.", "experiments")
    return [k for k in dict.fromkeys(experiment_keys) if k in specs.specs]


def _held_out(specs: ProjectSpecs, units: Sequence[Unit]) -> set[str]:
    """The units in the running holdout (none without one); records the holdout's exposures."""
    if specs.holdout is None or not units:
        return set()
    return holdout_exposures_seen_now(
        holdout=specs.holdout, unit_ids=[unit_id for unit_id, _ in units]
    )


def _hold_fixed(
    specs: ProjectSpecs,
    fixed: Mapping[str, dict[str, Any]],
    results: list[Answer],
    units: Sequence[Unit],
    held: set[str],
) -> None:
    """The holdout's units get control, not a shipped variant."""
    shipped = [k for k, answer in fixed.items() if answer["variant"] != specs.specs[k].control.key]
    if not shipped:
        return
    control = {k: _control_answer(specs.specs[k]) for k in shipped}
    for answer, (unit_id, _) in zip(results, units, strict=True):
        if unit_id in held:
            answer.update(control)


def _control_answer(spec: ExperimentSpec) -> dict[str, Any]:
    return {"variant": spec.control.key, "value": spec.control.value, "in_experiment": False}


def _fixed_answer(spec: ExperimentSpec) -> dict[str, Any]:
    """The one answer a stopped experiment gives everybody."""
    variant = spec.control
    if spec.status == _CONCLUDED and spec.shipped_variant is not None:
        variant = spec.variant(spec.shipped_variant)
    return {"variant": variant.key, "value": variant.value, "in_experiment": False}


def _decide(
    spec: ExperimentSpec, units: Sequence[Unit], stored: Mapping[tuple[str, str], str]
) -> list[str | None]:
    """Per unit: the stored variant if the unit passes targeting, else the hashed one, else None."""
    attribute = spec.hash_attribute
    condition = spec.condition or None
    key = spec.key
    if len(units) < _VECTOR_MIN:  # one by one: numpy's fixed cost is not worth it
        out: list[str | None] = []
        for unit_id, attributes in units:
            attrs = (
                {attribute: unit_id}
                if not attributes
                else attributes
                if attributes.get(attribute) == unit_id
                else {**attributes, attribute: unit_id}
            )
            previous = stored.get((key, unit_id)) if stored else None
            if previous is None:
                out.append(evaluate(spec, attrs))
            elif condition is None or eval_condition(attrs, condition):
                out.append(previous)
            else:
                out.append(None)
        return out
    out = [None] * len(units)
    fresh: list[int] = []
    fresh_attributes: list[Mapping[str, Any]] = []
    for i, (unit_id, attributes) in enumerate(units):
        attrs = (
            attributes
            if attributes.get(attribute) == unit_id
            else {**attributes, attribute: unit_id}
        )
        previous = stored.get((key, unit_id))
        if previous is None:
            fresh.append(i)
            fresh_attributes.append(attrs)
        elif condition is None or eval_condition(attrs, condition):
            out[i] = previous
    if fresh:
        for i, variant_key in zip(fresh, evaluate_many(spec, fresh_attributes), strict=True):
            out[i] = variant_key
    return out


def _stored_variants(
    specs: ProjectSpecs, keys: Sequence[str], unit_ids: Sequence[str]
) -> dict[tuple[str, str], str]:
    """``(experiment key, unit id) -> variant key`` of the stored assignments: from the
    assignment cache, the rest from the database (and then cached)."""
    if not keys or not unit_ids:
        return {}
    tags = {k: specs.assignment_tags[k] for k in keys}
    variant_keys = {vid: vkey for (_, vkey), vid in specs.variant_ids.items()}
    hits = cached_variants((tag, u) for tag in tags.values() for u in unit_ids)
    stored: dict[tuple[str, str], str] = {}
    missing_keys: set[str] = set()
    missing_units: dict[str, None] = {}  # ordered: the statement's parameters stay stable
    for key, tag in tags.items():
        for unit_id in unit_ids:
            variant_id = hits.get((tag, unit_id))
            if variant_id is not None and variant_id in variant_keys:
                stored[(key, unit_id)] = variant_keys[variant_id]
            else:
                missing_keys.add(key)
                missing_units[unit_id] = None
    if not missing_keys:
        return stored
    by_id = {specs.experiment_ids[k]: k for k in missing_keys}
    read: dict[tuple[str, str], int] = {}
    for e, u, v in _assignment_rows(list(by_id), list(missing_units)):
        if v in variant_keys:
            stored[(by_id[e], u)] = variant_keys[v]
            read[(tags[by_id[e]], u)] = v
    remember_variants(read)
    return stored


def _store_assignments(
    specs: ProjectSpecs, rows: Mapping[tuple[str, str], str]
) -> dict[tuple[str, str], str]:
    """Insert new assignments; return the stored variant of every row that lost a race."""
    values = [
        (
            specs.experiment_ids[key],
            unit_id,
            specs.variant_ids[(key, variant_key)],
            specs.phases.get(key, 0),
        )
        for (key, unit_id), variant_key in rows.items()
    ]
    inserted = _assignments_insert(values)
    by_id = {specs.experiment_ids[key]: key for key, _ in rows}
    remember_stored_variants(
        {
            (specs.assignment_tags[by_id[e]], u): specs.variant_ids[(by_id[e], rows[(by_id[e], u)])]
            for e, u in inserted
        }
    )
    lost = {(key, unit_id) for key, unit_id in rows} - {(by_id[e], u) for e, u in inserted}
    if not lost:
        return {}
    return _stored_variants(specs, list({k for k, _ in lost}), list({u for _, u in lost}))
