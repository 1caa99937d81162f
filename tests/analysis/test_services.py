"""analysis_run: snapshots, idempotency, backfills, failures, error control and auto-rollback."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from analysis import aggregation, incremental_read
from analysis.models import AnalysisRun, ResultRow, ResultSnapshot, RunStatus, WebhookDelivery
from analysis.services import analysis_backfill, analysis_run, analysis_run_create
from experiments.models import AuditLog, Experiment, ExperimentStatus, Project
from experiments.services import experiment_create, experiment_start, metric_create
from stats import benjamini_hochberg
from tests.analysis.simulate import simulate

pytestmark = pytest.mark.django_db


def start_experiment(project, key="exp", *, days_ago=2.0, **fields):
    experiment = experiment_create(
        project=project,
        key=key,
        name=key,
        variants=fields.pop(
            "variants",
            [
                {"key": "control", "weight": 0.5, "is_control": True},
                {"key": "treatment", "weight": 0.5},
            ],
        ),
        metrics=fields.pop("metrics"),
        **fields,
    )
    experiment = experiment_start(experiment=experiment)
    start = timezone.now() - timedelta(days=days_ago)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=start, phase_started_at=start)
    experiment.refresh_from_db()
    return experiment


@pytest.fixture
def catalog(project):
    metric_create(
        project=project, key="purchase", name="Purchase", kind="binomial", event_name="purchase"
    )
    metric_create(
        project=project,
        key="revenue",
        name="Revenue per user",
        kind="mean",
        event_name="revenue",
        winsorize_quantile=0.99,
    )
    metric_create(
        project=project,
        key="errors",
        name="Checkout errors",
        kind="count",
        event_name="error",
        direction="decrease",
    )
    metric_create(
        project=project,
        key="ctr",
        name="Clicks per view",
        kind="ratio",
        event_name="click",
        denominator_event="view",
    )
    return project


METRICS = [
    {"metric": "purchase", "role": "primary"},
    {"metric": "revenue", "role": "secondary"},
    {"metric": "ctr", "role": "secondary"},
    {"metric": "errors", "role": "guardrail", "non_inferiority_margin": 0.1},
]
SAME = {"purchase": 0.3, "revenue": 0.3, "error": 0.5, "click": 1.0, "view": 3.0}


def test_a_run_stores_every_metric_and_variant_with_its_cutoff(catalog):
    """One snapshot: a row per (metric, variant), the counts match the data, the run succeeds."""
    experiment = start_experiment(catalog, metrics=METRICS)
    simulate(
        experiment,
        units={"control": 150, "treatment": 150},
        start=experiment.phase_started_at,
        rates={"control": SAME, "treatment": SAME},
    )
    before = timezone.now()
    snapshot = analysis_run(experiment_id=experiment.pk)
    run = AnalysisRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 1 and run.error == ""
    assert snapshot.run_id == run.pk and run.data_through == snapshot.data_through
    assert snapshot.data_through >= before
    assert snapshot.total_units == 300
    assert snapshot.health["units_by_variant"] == {"control": 150, "treatment": 150}
    rows = list(snapshot.rows.all())
    assert sorted((r.metric_key, r.variant) for r in rows) == sorted(
        (m["metric"], v) for m in METRICS for v in ("control", "treatment")
    )
    assert all(r.n == 150 for r in rows)
    treatment = {r.metric_key: r for r in rows if not r.is_control}
    assert treatment["purchase"].alpha == pytest.approx(0.05)
    assert treatment["purchase"].p_value is not None
    assert treatment["errors"].status in {"non_inferior", "neutral"}
    assert "winsor_caps" in treatment["revenue"].details
    assert snapshot.recommendation in {"keep", "extend", "rollback"}


def test_rows_hold_the_sql_sufficient_statistics(catalog):
    experiment = start_experiment(catalog, metrics=METRICS)
    simulate(
        experiment,
        units={"control": 60, "treatment": 60},
        start=experiment.phase_started_at,
        rates={"control": SAME, "treatment": SAME},
    )
    snapshot = analysis_run(experiment_id=experiment.pk)
    variant_ids = {v.key: v.pk for v in experiment.variants.all()}
    spec = aggregation.MetricSpec("ctr", "ratio", "click", "view", 72)
    direct = aggregation.metric_aggregates(
        experiment_id=experiment.pk,
        project_id=experiment.project_id,
        metrics=[spec],
        since=experiment.phase_started_at,
        through=snapshot.data_through,
    )["ctr"].stats
    row = snapshot.rows.get(metric_key="ctr", variant="treatment")
    stats = direct[variant_ids["treatment"]]
    assert (row.n, row.sum, row.den_sum, row.sum_prod) == (
        stats.n,
        stats.sum,
        stats.den_sum,
        stats.sum_prod,
    )
    assert row.mean == pytest.approx(stats.sum / stats.den_sum)


def test_the_same_run_twice_gives_the_same_snapshot(catalog):
    """A redelivered task (same run id) returns the snapshot it already made."""
    experiment = start_experiment(catalog, metrics=METRICS[:1])
    first = analysis_run(experiment_id=experiment.pk)
    again = analysis_run(experiment_id=experiment.pk, run_id=first.run_id)
    assert again.pk == first.pk
    assert ResultSnapshot.objects.count() == 1


def test_a_backfill_is_idempotent_per_cutoff(catalog):
    experiment = start_experiment(catalog, metrics=METRICS[:1])
    through = experiment.phase_started_at + timedelta(hours=12)
    first = analysis_run(experiment_id=experiment.pk, through=through)
    second = analysis_run(experiment_id=experiment.pk, through=through)
    assert first.pk == second.pk and first.data_through == through
    assert AnalysisRun.objects.filter(trigger="backfill").count() == 2


def test_backfill_builds_a_daily_cumulative_history(catalog):
    """Daily cut-offs: each snapshot sees the units exposed up to its day, no later ones."""
    experiment = start_experiment(catalog, metrics=METRICS[:1], days_ago=3.5)
    simulate(
        experiment,
        units={"control": 100, "treatment": 100},
        start=experiment.phase_started_at,
        rates={"control": SAME, "treatment": SAME},
        spacing=timedelta(minutes=25),  # 200 units over ~3.5 days
    )
    snapshots = analysis_backfill(experiment_id=experiment.pk)
    assert len(snapshots) == 3
    cutoffs = [s.data_through - experiment.phase_started_at for s in snapshots]
    assert cutoffs == [timedelta(days=d) for d in (1, 2, 3)]
    units = [s.total_units for s in snapshots]
    assert units == sorted(units) and units[0] < units[-1] < 200
    assert units[0] == 1 + int(timedelta(days=1) / timedelta(minutes=25))
    # Re-running the backfill adds nothing; the automation never acted on past cut-offs.
    assert [s.pk for s in analysis_backfill(experiment_id=experiment.pk)] == [
        s.pk for s in snapshots
    ]
    assert all(s.actions == [] for s in snapshots)


def test_a_failed_run_records_its_error_and_the_previous_snapshot_stays(catalog, monkeypatch):
    experiment = start_experiment(catalog, metrics=METRICS[:1])
    good = analysis_run(experiment_id=experiment.pk)

    def broken(**kwargs):
        raise RuntimeError("the events table is on fire")

    monkeypatch.setattr(aggregation, "experiment_aggregates", broken)
    monkeypatch.setattr(incremental_read, "experiment_aggregates", broken)  # the stored path's read
    with pytest.raises(RuntimeError):
        analysis_run(experiment_id=experiment.pk)
    failed = AnalysisRun.objects.order_by("-id").first()
    assert failed.status == RunStatus.FAILED
    assert failed.error == "RuntimeError: the events table is on fire"
    assert list(ResultSnapshot.objects.values_list("pk", flat=True)) == [good.pk]


def test_secondaries_get_benjamini_hochberg_adjusted_p_values(catalog):
    experiment = start_experiment(catalog, metrics=METRICS)
    lifted = {**SAME, "revenue": 0.6, "click": 1.6}
    simulate(
        experiment,
        units={"control": 300, "treatment": 300},
        start=experiment.phase_started_at,
        rates={"control": SAME, "treatment": lifted},
    )
    snapshot = analysis_run(experiment_id=experiment.pk)
    rows = list(snapshot.rows.filter(role="secondary", is_control=False).order_by("id"))
    expected = benjamini_hochberg([r.p_value for r in rows])
    assert [r.adjusted_p_value for r in rows] == pytest.approx(expected)
    for r in rows:
        assert r.significant == (r.adjusted_p_value < 0.05)
    primary = snapshot.rows.get(role="primary", is_control=False)
    assert primary.adjusted_p_value is None


def test_primary_alpha_is_split_by_bonferroni_over_primaries_and_arms(catalog):
    experiment = start_experiment(
        catalog,
        metrics=[
            {"metric": "purchase", "role": "primary"},
            {"metric": "errors", "role": "primary"},
        ],
        variants=[
            {"key": "control", "weight": 0.4, "is_control": True},
            {"key": "b", "weight": 0.3},
            {"key": "c", "weight": 0.3},
        ],
    )
    snapshot = analysis_run(experiment_id=experiment.pk)
    alphas = list(snapshot.rows.filter(is_control=False).values_list("alpha", flat=True))
    assert alphas == [pytest.approx(0.05 / 2 / 2)] * 4


def test_group_sequential_looks_accumulate_over_snapshots(catalog):
    """With a planned sample the looks come from earlier snapshots of the phase."""
    experiment = start_experiment(catalog, metrics=METRICS[:1], planned_sample_size=1000)
    start = experiment.phase_started_at
    simulate(
        experiment,
        units={"control": 200, "treatment": 200},  # control units first, then treatment
        start=start,
        rates={"control": SAME, "treatment": SAME},
        spacing=timedelta(minutes=1),
    )
    young = analysis_run(experiment_id=experiment.pk, through=start + timedelta(minutes=250))
    assert young.look_kind == "collecting" and young.looks == {}
    assert young.recommendation == "extend" and "Collecting data" in young.reasons[0]
    first = analysis_run(experiment_id=experiment.pk, through=start + timedelta(minutes=330))
    second = analysis_run(experiment_id=experiment.pk, through=start + timedelta(minutes=400))
    assert first.method == "group_sequential" and first.look_kind == "look"
    f1 = first.rows.get(is_control=False).information_fraction
    f2 = second.rows.get(is_control=False).information_fraction
    assert 0 < f1 < f2 <= 0.4
    assert first.looks == {"treatment": [pytest.approx(f1)]}
    assert second.looks == {"treatment": [pytest.approx(f1), pytest.approx(f2)]}
    assert second.rows.get(is_control=False).details["boundary_z"] > 0
    # A snapshot with no new 1% of information is not a look: it stores nothing, acts on
    # nothing, and its run says when the next look comes.
    later = analysis_run(experiment_id=experiment.pk, through=start + timedelta(minutes=401))
    assert later == second
    run = AnalysisRun.objects.order_by("-id").first()
    assert run.status == RunStatus.SUCCEEDED and "next look is at 41%" in run.note


def test_extend_reports_extra_units_and_days(catalog):
    experiment = start_experiment(catalog, metrics=METRICS[:1], mde=0.1)
    simulate(
        experiment,
        units={"control": 200, "treatment": 200},
        start=experiment.phase_started_at,
        rates={"control": SAME, "treatment": SAME},
    )
    snapshot = analysis_run(experiment_id=experiment.pk)
    assert snapshot.recommendation == "extend"
    assert snapshot.extra_units > 0 and snapshot.extra_days > 0
    assert any(f"{snapshot.extra_units:,} more units" in r for r in snapshot.reasons)
    assert snapshot.arms[0]["extra_units"] == snapshot.extra_units


def _harmful(catalog, *, auto_rollback, webhook_url=""):
    Project.objects.filter(pk=catalog.pk).update(webhook_url=webhook_url)
    experiment = start_experiment(catalog, metrics=METRICS, auto_rollback=auto_rollback)
    simulate(
        experiment,
        units={"control": 400, "treatment": 400},
        start=experiment.phase_started_at,
        rates={"control": SAME, "treatment": {**SAME, "error": 1.5}},
    )
    return experiment


def test_auto_rollback_on_guardrail_harm(catalog, django_capture_on_commit_callbacks):
    experiment = _harmful(catalog, auto_rollback=True, webhook_url="http://127.0.0.1:9/hook")
    with django_capture_on_commit_callbacks() as callbacks:
        snapshot = analysis_run(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert snapshot.recommendation == "rollback"
    assert experiment.status == ExperimentStatus.ROLLED_BACK
    assert snapshot.rows.get(metric_key="errors", is_control=False).status == "harmed"
    assert "Checkout errors (guardrail) rose in 'treatment'" in snapshot.reasons[0]
    [action] = snapshot.actions
    assert action["action"] == "rollback" and action["reason"] == " ".join(snapshot.reasons)
    log = AuditLog.objects.get(experiment=experiment, action="experiment.rollback")
    assert log.actor_label == "system" and log.after["reason"] == action["reason"]
    delivery = WebhookDelivery.objects.get(event="experiment.rolled_back")
    assert action["webhook_delivery"] == delivery.pk
    # ... and the recommendation change (extend -> rollback) is announced too; each delivery
    # task is queued after commit, not awaited (the other callbacks renew the serving caches'
    # generation after the experiment's change).
    changed = WebhookDelivery.objects.get(event="experiment.recommendation_changed")
    assert changed.snapshot_id == snapshot.pk
    assert len([c for c in callbacks if "webhook_enqueue" in c.__qualname__]) == 2


def test_without_opt_in_harm_is_only_recommended(catalog):
    experiment = _harmful(catalog, auto_rollback=False)
    snapshot = analysis_run(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert snapshot.recommendation == "rollback"
    assert experiment.status == ExperimentStatus.RUNNING
    assert snapshot.actions == []


def test_a_sample_ratio_mismatch_is_unhealthy(catalog):
    experiment = start_experiment(catalog, metrics=METRICS[:1], auto_rollback=True)
    simulate(
        experiment,
        units={"control": 300, "treatment": 150},
        start=experiment.phase_started_at,
        rates={"control": SAME, "treatment": SAME},
    )
    snapshot = analysis_run(experiment_id=experiment.pk)
    assert snapshot.health["srm_flagged"] and not snapshot.health["healthy"]
    assert snapshot.recommendation == "rollback"
    assert "Sample ratio mismatch" in snapshot.reasons[0]
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.ROLLED_BACK


def _live_run(experiment, through):
    """A scheduled (live) run at a chosen cut-off, as the worker makes one."""
    run = analysis_run_create(experiment=experiment, trigger="schedule", through=through)
    return analysis_run(experiment_id=experiment.pk, run_id=run.pk)


def _events(experiment):
    return list(
        WebhookDelivery.objects.filter(experiment=experiment)
        .order_by("id")
        .values_list("event", flat=True)
    )


def test_a_recommendation_change_sends_a_webhook_once(catalog):
    experiment = _harmful(catalog, auto_rollback=False, webhook_url="https://hooks.example.com/a")
    start = experiment.phase_started_at
    first = _live_run(experiment, start + timedelta(days=1))
    assert first.recommendation == "rollback"
    assert _events(experiment) == ["experiment.recommendation_changed"]
    delivery = WebhookDelivery.objects.get()
    message = json.loads(delivery.body)
    assert message["previous_recommendation"] == "extend"
    assert message["recommendation"] == "rollback" and message["snapshot_id"] == first.pk
    assert "from extend to rollback" in message["reason"]
    second = _live_run(experiment, start + timedelta(days=1.5))
    assert second.recommendation == "rollback" and second.pk != first.pk
    assert len(_events(experiment)) == 1  # unchanged: nothing new to say


def test_a_new_sample_ratio_mismatch_sends_an_alert_once(catalog):
    Project.objects.filter(pk=catalog.pk).update(webhook_url="https://hooks.example.com/a")
    experiment = start_experiment(catalog, metrics=METRICS[:1])
    start = experiment.phase_started_at
    balanced = {"control": 200, "treatment": 200}
    simulate(experiment, units=balanced, start=start, rates={"control": SAME, "treatment": SAME})
    healthy = _live_run(experiment, start + timedelta(hours=6))
    assert not healthy.health["srm_flagged"]
    assert "experiment.srm_detected" not in _events(experiment)
    simulate(
        experiment,
        units={"control": 300},
        start=start + timedelta(hours=7),
        rates={"control": SAME},
        prefix="late-",
    )
    flagged = _live_run(experiment, start + timedelta(hours=20))
    assert flagged.health["srm_flagged"]
    [alert] = WebhookDelivery.objects.filter(event="experiment.srm_detected")
    message = json.loads(alert.body)
    assert message["units_by_variant"] == {"control": 500, "treatment": 200}
    assert message["srm_p_value"] < 0.001 and "Sample-ratio mismatch" in message["reason"]
    still = _live_run(experiment, start + timedelta(hours=30))
    assert still.health["srm_flagged"]
    assert _events(experiment).count("experiment.srm_detected") == 1


def test_backfills_send_no_alerts(catalog):
    experiment = _harmful(catalog, auto_rollback=False, webhook_url="https://hooks.example.com/a")
    analysis_backfill(experiment_id=experiment.pk, every=timedelta(hours=12))
    assert _events(experiment) == []


def test_no_exposures_is_a_warning_and_extends(catalog):
    experiment = start_experiment(catalog, metrics=METRICS[:1])
    snapshot = analysis_run(experiment_id=experiment.pk)
    assert snapshot.total_units == 0
    assert snapshot.recommendation == "extend"
    assert any("No exposures yet" in w for w in snapshot.health["warnings"])
    assert ResultRow.objects.filter(snapshot=snapshot).count() == 2
    assert snapshot.rows.get(is_control=False).lift_rel is None


def test_one_absurd_stored_value_errors_its_metric_and_the_rest_still_decides(catalog):
    """The measured defect: one stored value of 1e308 (accepted before ingestion bounded
    values) made every analysis of every experiment using that event fail, for good."""
    from assignments.models import MetricEvent

    metric_create(project=catalog, key="spend", name="Spend", kind="mean", event_name="spend")
    guarded = [*METRICS, {"metric": "spend", "role": "guardrail", "non_inferiority_margin": 0.5}]
    experiment = start_experiment(catalog, metrics=guarded)
    simulate(
        experiment,
        units={"control": 150, "treatment": 150},
        start=experiment.phase_started_at,
        rates={"control": {**SAME, "spend": 1.0}, "treatment": {**SAME, "spend": 1.0}},
    )
    MetricEvent.objects.create(
        project_id=experiment.project_id,
        event_id="poison",
        name="spend",  # a mean metric, not winsorized
        unit_id="u3",
        value=1e308,
        ts=experiment.phase_started_at + timedelta(minutes=5),
    )
    snapshot = analysis_run(experiment_id=experiment.pk)
    assert AnalysisRun.objects.get().status == RunStatus.SUCCEEDED
    spend = snapshot.rows.get(metric_key="spend", is_control=False)
    purchase = snapshot.rows.get(metric_key="purchase", is_control=False)
    assert spend.status == "error" and spend.details["error"]
    assert purchase.status != "error" and purchase.p_value is not None
    assert "spend" in snapshot.health["metric_errors"]
    assert any(f["check"] == "metric_error" for f in snapshot.health["findings"])
    # A guardrail that cannot be judged cannot clear the change: no "keep" past it.
    assert snapshot.recommendation == "extend"
    assert any("could not be computed" in r for r in snapshot.reasons)


def test_exposures_before_the_phase_start_are_a_health_finding_with_their_count(project, catalog):
    """Exposures stamped before the phase started are stored but never counted: the run says
    how many, and the dashboard's health panel shows it with what to check."""
    from analysis.selectors import health_findings
    from assignments.services import events_ingest

    experiment = start_experiment(project, metrics=[{"metric": "purchase", "role": "primary"}])
    start = experiment.phase_started_at

    def exposure(i, ts):
        return {"event_id": f"x{i}", "type": "exposure", "experiment": "exp",
                "variant": ["control", "treatment"][i % 2], "unit_id": f"u{i}",
                "timestamp": ts.isoformat()}  # fmt: skip

    events = [exposure(i, start - timedelta(hours=1)) for i in range(3)]
    events += [exposure(i, start + timedelta(hours=1)) for i in range(3, 40)]
    assert len(events_ingest(project=project, events=events).ignored) == 3
    snapshot = analysis_run(experiment_id=experiment.pk)
    [finding] = [f for f in snapshot.health["findings"] if f["check"] == "pre_start_exposures"]
    assert finding["severity"] == "warning" and finding["value"] == 3
    assert "3 exposures are stamped before this phase started" in finding["message"]
    shown = health_findings(experiment, snapshot, None)
    assert any(f.title == "Exposures before the phase start are not counted" for f in shown)
