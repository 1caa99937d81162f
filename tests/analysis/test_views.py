"""The results dashboard and the overview: what a product manager sees, server-rendered."""

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from analysis.models import AnalysisRun, ResultSnapshot, RunStatus
from analysis.selectors import snapshot_history
from analysis.services import analysis_run
from assignments.services import events_ingest
from experiments.models import Experiment, Role
from experiments.services import experiment_pause
from tests.analysis.test_exports import ensure_metrics, seed_results
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def page(client: Client, key: str = "checkout-v2") -> str:
    response = client.get(f"/p/shop/experiments/{key}/results/")
    assert response.status_code == 200
    return response.content.decode()


def chart_data(html: str) -> dict:
    match = re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>', html)
    assert match, "the page embeds its chart data with json_script"
    return json.loads(match.group(1))


def test_dashboard_shows_banner_table_by_role_charts_and_downloads(web, project):
    experiment = seed_results(project, looks=3, units=200)
    html = page(web)
    snapshot = experiment.snapshots.latest()
    assert 'id="recommendation"' in html
    assert f'data-action="{snapshot.recommendation}"' in html
    for reason in snapshot.reasons:
        assert reason.replace("'", "&#x27;") in html
    assert f'datetime="{snapshot.data_through.isoformat()}"' in html
    assert f'id="computed-at" datetime="{snapshot.computed_at.isoformat()}"' in html
    # the table: one tbody per role, primary first, then guardrails, then secondary
    roles = re.findall(r"<tbody class=\"metric-group\" data-role=\"(\w+)\">", html)
    assert roles == ["primary", "guardrail", "secondary"]
    assert 'id="metrics"' in html and "CUPED" in html
    assert "Always-valid" in html and "Fixed-horizon" in html and "Bayesian" in html
    assert 'data-metric="errors"' in html and "margin −20.0%" not in html  # errors: lower=better
    assert "margin +20.0%" in html
    # the charts: one interval plot per metric, cumulative lift, exposures, sample-size progress
    assert len(re.findall(r'data-chart="interval"', html)) == 3
    for chart in ("cumulative", "exposures", "progress"):
        assert f'data-chart="{chart}"' in html
    data = chart_data(html)
    assert len(data["history"]) == 3
    assert [v["key"] for v in data["variants"]] == ["control", "treatment"]
    assert data["history"][-1]["units_by_variant"] == snapshot.health["units_by_variant"]
    # the downloads and the refresh
    assert 'id="download"' in html and 'value="parquet"' in html
    assert 'id="refresh"' in html and 'data-results-url="/api/v1/projects/shop/' in html


def test_pages_hold_no_inline_script_code_and_load_only_local_assets(web, project):
    seed_results(project, looks=1, units=60)
    for html in (page(web), web.get("/p/shop/results/").content.decode()):
        for attrs, code in re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S):
            assert "src=" in attrs or 'type="application/json"' in attrs, attrs
            assert "src=" not in attrs or code.strip() == ""
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert not url.startswith(("http:", "https:", "//")), url


def test_viewers_see_the_dashboard_without_download_buttons(project, make_member):
    seed_results(project, looks=1, units=60)
    client = Client()
    client.force_login(make_member("vera", Role.VIEWER))
    html = page(client)
    assert 'id="recommendation"' in html and 'id="download"' not in html
    client.force_login(make_member("ana", Role.ANALYST))
    assert 'id="download"' in page(client)


def test_extend_says_roughly_how_many_days_are_left(web, project):
    experiment = seed_results(project, looks=1, units=200, lift=0.0, planned_sample_size=20000)
    snapshot = experiment.snapshots.latest()
    assert snapshot.recommendation == "extend"
    html = page(web)
    match = re.search(r'<span class="rec-days" id="days-left">about ([^<]+) left</span>', html)
    assert match and "day" in match.group(1)
    assert "Keep the experiment running" in html


def test_sample_ratio_mismatch_is_impossible_to_miss(web, project):
    ensure_metrics(project)
    experiment = running_experiment(project)
    start = timezone.now() - timedelta(days=1)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=start, phase_started_at=start)
    events = [
        {
            "event_id": f"x{i}",
            "type": "exposure",
            "experiment": experiment.key,
            "variant": "control" if i % 3 else "treatment",  # 2:1 against a 50/50 split
            "unit_id": f"u{i}",
            "timestamp": (start + timedelta(minutes=i)).isoformat(),
        }
        for i in range(600)
    ]
    events_ingest(project=project, events=events)
    snapshot = analysis_run(experiment_id=experiment.pk)
    assert snapshot.health["srm_flagged"]
    html = page(web)
    assert 'data-action="rollback"' in html
    finding = re.search(r'<div class="finding finding-error" data-kind="srm" role="alert">', html)
    assert finding, "an SRM shows as an error-level alert"
    assert "Sample ratio mismatch" in html and "What to check:" in html


def test_no_snapshot_yet_and_no_data_say_what_to_do(web, project):
    ensure_metrics(project)
    experiment = running_experiment(project)
    html = page(web)
    assert 'data-action="none"' in html and "NO RESULTS YET" in html
    assert "dashboard-data" not in html
    analysis_run(experiment_id=experiment.pk)
    html = page(web)
    assert 'data-kind="no_exposures"' in html and "exposure events" in html


def test_a_young_experiment_says_how_much_data_it_waits_for(web, project):
    """The measured defect: young experiments read as broken ("n/a so far, but the 97.5%
    interval (n/a to n/a)"). Before every arm has its minimum there is no decision to read."""
    experiment = seed_results(project, looks=1, units=30)
    snapshot = experiment.snapshots.latest()
    assert snapshot.look_kind == "collecting"
    html = page(web)
    assert "Collecting data" in html and "before a first decision" in html
    assert "n/a" not in html
    assert set(snapshot.rows.filter(is_control=False).values_list("status", flat=True)) == {
        "collecting"
    }


def test_stale_results_and_failed_runs_are_flagged(web, project):
    experiment = seed_results(project, looks=1, units=60)
    ResultSnapshot.objects.filter(experiment=experiment).update(
        computed_at=timezone.now() - timedelta(hours=5)
    )
    AnalysisRun.objects.create(
        experiment=experiment, status=RunStatus.FAILED, error="OperationalError: disk full"
    )
    html = page(web)
    assert 'data-kind="stale"' in html and "Results are out of date" in html
    assert 'data-kind="run_failed"' in html and "disk full" in html
    # nothing is stale about a paused experiment
    experiment_pause(experiment=experiment)
    AnalysisRun.objects.all().delete()
    assert 'data-kind="stale"' not in page(web)


def test_refresh_without_javascript_queues_a_run(
    web, project, monkeypatch, django_capture_on_commit_callbacks
):
    experiment = seed_results(project, looks=1, units=60)
    sent = []
    monkeypatch.setattr("analysis.tasks.run_analysis.delay", lambda *args: sent.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        response = web.post(f"/p/shop/experiments/{experiment.key}/analyze/")
    assert response.status_code == 302
    run = AnalysisRun.objects.filter(trigger="web").get()
    assert sent == [(experiment.pk, run.pk)]


def test_dashboard_queries_do_not_grow_with_the_history(
    web, project, django_assert_max_num_queries
):
    seed_results(project, looks=4, units=40)
    with django_assert_max_num_queries(20):
        page(web)


# --- the overview across experiments ------------------------------------------------------------


def test_overview_lists_status_recommendation_days_and_primary_lift(web, project):
    first = seed_results(project, "first", looks=1, units=200)
    second = seed_results(project, "second", looks=1, units=60, lift=0.0, seed=3)
    draft = running_experiment(project, "third")
    Experiment.objects.filter(pk=draft.pk).update(status="draft", started_at=None)
    response = web.get("/p/shop/results/")
    assert response.status_code == 200
    html = response.content.decode()
    for experiment in (first, second):
        snapshot = experiment.snapshots.latest()
        row = re.search(rf'<tr data-experiment="{experiment.key}".*?</tr>', html, flags=re.S)
        assert row, experiment.key
        assert f'data-recommendation="{snapshot.recommendation}"' in row.group(0)
        assert "2 days" in row.group(0)  # started two days ago
        lift = snapshot.rows.get(role="primary", is_control=False).lift_rel
        assert f"{lift * 100:+.2f}%".replace("-", "−") in row.group(0)
    third = re.search(r'<tr data-experiment="third".*?</tr>', html, flags=re.S).group(0)
    assert 'data-recommendation="none"' in third and "No results yet" in third


def test_overview_filters_by_status_and_recommendation(web, project):
    first = seed_results(project, "first", looks=1, units=60)
    second = seed_results(project, "second", looks=1, units=60, seed=3)
    experiment_pause(experiment=second)
    action = first.snapshots.latest().recommendation

    def listed(**params) -> list[str]:
        html = web.get("/p/shop/results/", params).content.decode()
        return re.findall(r'<tr data-experiment="([\w-]+)"', html)

    assert sorted(listed()) == ["first", "second"]
    assert listed(status="paused") == ["second"]
    assert listed(status="running") == ["first"]
    assert "first" in listed(recommendation=action)
    others = [r for r in ("keep", "extend", "rollback") if r != action]
    assert all("first" not in listed(recommendation=r) for r in others)
    assert listed(recommendation="none") == []
    html = web.get("/p/shop/results/", {"status": "paused"}).content.decode()
    assert '<input type="hidden" name="experiment" value="second">' in html


def test_overview_queries_stay_flat_in_the_number_of_experiments(
    web, project, django_assert_max_num_queries
):
    for i in range(4):
        seed_results(project, f"exp-{i}", looks=1, units=20, seed=i)
    with django_assert_max_num_queries(10):
        web.get("/p/shop/results/")


def test_history_is_thinned_evenly_keeping_the_first_and_latest_snapshot(project):
    experiment = seed_results(project, looks=5, units=20)
    all_ids = list(experiment.snapshots.order_by("data_through").values_list("pk", flat=True))
    points = snapshot_history(experiment, phase=0, max_points=3)
    assert [p["snapshot_id"] for p in points] == [all_ids[0], all_ids[2], all_ids[4]]
    assert set(points[-1]["metrics"]) == {"purchase", "errors", "revenue"}
