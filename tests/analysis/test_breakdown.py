"""Dimension breakdowns end to end: ingestion with attributes -> snapshot -> the breakdown
service, its API (shape, numbers re-derived independently, errors naming the field, who may
read it), its exports (API and CLI) in every format."""

import io
import json
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from analysis import breakdown, breakdown_aggregation
from analysis.breakdown import attributes_seen, experiment_breakdown
from analysis.breakdown_exports import BREAKDOWN_COLUMNS
from analysis.models import ResultSnapshot
from analysis.services import analysis_run
from assignments.services import events_ingest
from experiments.models import Experiment, Role
from experiments.services import api_key_create, project_create
from stats import AnalysisConfig, SampleStats, analyze_metric
from tests.analysis.test_exports import ensure_metrics
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db
URL = "/api/v1/projects/shop/experiments/checkout-v2"
# country: (units per arm, control rate, treatment rate)
COUNTRIES = {"DE": (160, 0.10, 0.30), "FR": (120, 0.15, 0.15), "US": (80, 0.10, 0.16)}


@pytest.fixture(autouse=True)
def empty_cache():
    """Breakdowns are cached by experiment and snapshot ids, which tests reuse."""
    cache.clear()


@pytest.fixture
def bare(project):
    """A running experiment (purchase primary, revenue secondary) without traffic."""
    ensure_metrics(project)
    return running_experiment(
        project,
        metrics=[
            {"metric": "purchase", "role": "primary"},
            {"metric": "revenue", "role": "secondary"},
        ],
    )


@pytest.fixture
def shop(project, bare):
    """``bare`` whose exposures carry the unit's country (DE: +200%, FR: none, US: +60%) and
    platform; 40 units per arm without a country; one snapshot."""
    experiment = bare
    start = timezone.now() - timedelta(days=2)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=start, phase_started_at=start)
    experiment.refresh_from_db()
    rng = np.random.default_rng(3)
    events = []
    for country, (units, control_rate, treatment_rate) in {
        **COUNTRIES,
        None: (40, 0.1, 0.1),
    }.items():
        for i in range(2 * units):
            variant = ("control", "treatment")[i % 2]
            unit = f"{country}-{i}"
            ts = start + timedelta(hours=1, minutes=i)
            attributes = {"platform": ("ios", "web")[i % 3 == 0]}
            if country:
                attributes["country"] = country
            events.append(
                {
                    "event_id": f"x-{unit}",
                    "type": "exposure",
                    "experiment": experiment.key,
                    "variant": variant,
                    "unit_id": unit,
                    "timestamp": ts.isoformat(),
                    "attributes": attributes,
                }
            )
            rate = control_rate if variant == "control" else treatment_rate
            if rng.random() < rate:
                events.append(
                    {
                        "event_id": f"p-{unit}",
                        "type": "metric",
                        "name": "purchase",
                        "unit_id": unit,
                        "value": round(float(rng.lognormal(3, 0.4)), 2),
                        "timestamp": (ts + timedelta(minutes=30)).isoformat(),
                    }
                )
    result = events_ingest(project=project, events=events)
    assert not result.rejected
    analysis_run(experiment_id=experiment.pk)
    return experiment


def stats_of(d):
    return SampleStats(**d)


def test_levels_units_and_rows_follow_the_first_exposures_attributes(shop):
    """Levels by units (DE, FR, US, then '(none)'); each level's units are the hand counts; each
    row is a results row with both arms' sufficient statistics."""
    data = experiment_breakdown(shop, "country")
    assert data["dimension"] == "country" and data["method"] == "fixed" and data["exploratory"]
    assert [(lv["value"], lv["kind"], lv["units"]) for lv in data["levels"]] == [
        ("DE", "value", 320),
        ("FR", "value", 240),
        ("US", "value", 160),
        ("(none)", "none", 80),
    ]
    assert data["levels"][0]["units_by_variant"] == {"control": 160, "treatment": 160}
    snapshot = ResultSnapshot.objects.get()
    assert data["snapshot_id"] == snapshot.pk
    assert data["data_through"] == snapshot.data_through.isoformat()
    row = data["levels"][0]["metrics"][0]
    assert {"metric", "role", "variant", "control_n", "variant_n", "lift_rel", "ci_low", "ci_high",
            "p_value", "adjusted_p_value", "significant", "status"} <= set(row)  # fmt: skip
    assert (row["metric"], row["variant"], row["control_n"]) == ("purchase", "treatment", 160)
    assert row["control_stats"]["n"] == 160 and row["variant_stats"]["n"] == 160
    total = sum(lv["metrics"][0]["control_stats"]["sum"] for lv in data["levels"])
    stored = snapshot.rows.get(metric_key="purchase", variant="control")
    assert total == stored.sum  # the levels add up to the snapshot's results


def test_every_number_is_re_derived_from_the_rows_statistics(shop):
    """p-values are Welch's on the rows' statistics; the adjusted ones Benjamini-Hochberg over
    the whole breakdown (statsmodels); the heterogeneity p-value of purchase is Cochran's Q of
    the textbook log risk ratios, (1 - p_t)/(n_t p_t) + (1 - p_c)/(n_c p_c), against scipy's
    chi-square; Holm over (metric, arm) (statsmodels)."""
    data = experiment_breakdown(shop, "country")
    rows = [row for level in data["levels"] for row in level["metrics"]]
    for row in rows:
        kind = row["kind"]
        result = analyze_metric(
            stats_of(row["control_stats"]),
            stats_of(row["variant_stats"]),
            AnalysisConfig(kind=kind, method="fixed", cuped=kind != "binomial"),
        )
        assert row["p_value"] == pytest.approx(result.p_value, rel=1e-9)
    tested = [r for r in rows if r["p_value"] is not None]
    _, bh, _, _ = multipletests([r["p_value"] for r in tested], method="fdr_bh")
    assert [r["adjusted_p_value"] for r in tested] == pytest.approx(list(bh), rel=1e-9)
    assert data["correction"]["tests"] == len(tested)
    for r in tested:
        assert r["significant"] == (r["adjusted_p_value"] < 0.05)
    y, v = [], []
    for level in data["levels"]:
        row = next(r for r in level["metrics"] if r["metric"] == "purchase")
        c, t = row["control_stats"], row["variant_stats"]
        p_c, p_t = c["sum"] / c["n"], t["sum"] / t["n"]
        y.append(np.log(p_t / p_c))
        v.append((1 - p_t) / (t["n"] * p_t) + (1 - p_c) / (c["n"] * p_c))
    w = 1 / np.array(v)
    q = float(np.sum(w * (np.array(y) - np.sum(w * np.array(y)) / np.sum(w)) ** 2))
    purchase = next(t for t in data["heterogeneity"] if t["metric"] == "purchase")
    assert purchase["q"] == pytest.approx(q, rel=1e-9)
    assert purchase["p_value"] == pytest.approx(sps.chi2.sf(q, len(y) - 1), rel=1e-9)
    _, holm, _, _ = multipletests([t["p_value"] for t in data["heterogeneity"]], method="holm")
    assert [t["adjusted_p_value"] for t in data["heterogeneity"]] == pytest.approx(list(holm))
    assert purchase["significant"]  # +200% in DE, nothing in FR
    de = data["levels"][0]["metrics"][0]
    assert de["status"] == "improved" and de["ci_low"] > 0
    assert "Benjamini-Hochberg" in data["note"] and "Cochran's Q" in data["note"]


def test_a_cap_on_levels_groups_the_rest_as_other(shop):
    """levels=1: DE stays, FR and US are '(other)'."""
    data = experiment_breakdown(shop, "country", levels=1)
    assert [(lv["value"], lv["units"]) for lv in data["levels"]] == [
        ("DE", 320),
        ("(other)", 400),
        ("(none)", 80),
    ]


def test_the_picker_lists_the_attributes_seen(shop):
    assert attributes_seen(shop) == ["country", "platform"]


def test_a_cached_breakdown_is_not_recomputed_until_the_next_snapshot(shop, monkeypatch):
    """Per (snapshot, dimension) the answer is cached; a new snapshot computes anew."""
    first = experiment_breakdown(shop, "platform")
    calls = []
    real = breakdown_aggregation.breakdown_aggregates
    monkeypatch.setattr(
        breakdown_aggregation, "breakdown_aggregates", lambda **kw: calls.append(kw) or real(**kw)
    )
    assert experiment_breakdown(shop, "platform") == first and calls == []
    analysis_run(experiment_id=shop.pk)
    assert experiment_breakdown(shop, "platform")["snapshot_id"] != first["snapshot_id"]
    assert len(calls) == 1


# --- the API ------------------------------------------------------------------------------------


def test_the_api_answers_the_contract_shape(api, shop):
    response = api.get(f"{URL}/results/breakdown", {"dimension": "country"})
    assert response.status_code == 200, response.content
    data = response.json()
    assert {"dimension", "levels", "heterogeneity"} <= set(data)
    assert {"value", "units", "metrics"} <= set(data["levels"][0])
    assert {"metric", "variant", "p_value"} <= set(data["heterogeneity"][0])


@pytest.mark.parametrize(
    "params, field, message",
    [
        ({}, "dimension", "'dimension' is required"),
        ({"dimension": "  "}, "dimension", "'dimension' is required"),
        ({"dimension": "x" * 101}, "dimension", "longer than 100"),
        ({"dimension": 'co"untry'}, "dimension", "quotes"),
        ({"dimension": "a\tb"}, "dimension", "control characters"),
    ],
)
def test_a_missing_or_bad_dimension_is_a_400_naming_it(api, bare, params, field, message):
    response = api.get(f"{URL}/results/breakdown", params)
    assert response.status_code == 400
    assert response.json()["field"] == field and message in response.json()["detail"]


@pytest.mark.parametrize("levels", ["0", "51", "many"])
def test_bad_levels_are_a_400_naming_them(api, bare, levels):
    response = api.get(f"{URL}/results/breakdown", {"dimension": "country", "levels": levels})
    assert response.status_code == 400 and "levels" in response.json()


def test_an_attribute_nobody_sent_is_one_level_of_units_without_it(api, shop):
    data = api.get(f"{URL}/results/breakdown", {"dimension": "browser"}).json()
    assert [(lv["value"], lv["units"]) for lv in data["levels"]] == [("(none)", 800)]
    assert all(t["p_value"] is None for t in data["heterogeneity"])


def test_viewers_and_read_keys_may_read_it_other_projects_may_not(shop, make_member, project):
    viewer = APIClient()
    viewer.force_authenticate(make_member("vera", Role.VIEWER))
    assert viewer.get(f"{URL}/results/breakdown?dimension=country").status_code == 200
    key = APIClient()
    secret = api_key_create(project=project, name="r", scopes=["read"]).secret
    key.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert key.get(f"{URL}/results/breakdown?dimension=country").status_code == 200
    other = project_create(slug="other", name="Other")
    foreign = APIClient()
    secret = api_key_create(project=other, name="r", scopes=["read"]).secret
    foreign.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert foreign.get(f"{URL}/results/breakdown?dimension=country").status_code == 404
    outsider = APIClient()
    outsider.force_authenticate(make_member("oscar", Role.VIEWER, proj=other))
    assert outsider.get(f"{URL}/results/breakdown?dimension=country").status_code == 404


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's statement timeout")
def test_a_breakdown_past_its_statement_timeout_is_a_503_saying_so(
    api, shop, settings, monkeypatch
):
    """The breakdown's own timeout (not the analysis task's) stops the SQL; the answer is a 503
    with a message naming the setting."""
    settings.ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS = 50

    def slow(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(1)")

    monkeypatch.setattr(breakdown_aggregation, "breakdown_aggregates", slow)
    response = api.get(f"{URL}/results/breakdown", {"dimension": "country"})
    assert response.status_code == 503
    assert "ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS" in response.json()["detail"]


# --- exports ------------------------------------------------------------------------------------


def read(fmt, data):
    if fmt == "csv":
        return pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=[""])
    if fmt == "json":
        return pd.DataFrame(json.loads(data)["rows"])
    return pd.read_parquet(io.BytesIO(data))


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_the_breakdown_export_has_a_row_per_level_metric_and_arm(api, shop, fmt):
    """Through the experiment's export API with ?dimension=: the documented columns, a row per
    (level, metric, treatment arm), the same numbers as the breakdown API."""
    response = api.get(f"{URL}/export", {"dimension": "country", "format": fmt})
    assert response.status_code == 200
    assert "breakdown-country" in response["Content-Disposition"]
    table = read(fmt, b"".join(response.streaming_content))
    assert list(table.columns) == [c.name for c in BREAKDOWN_COLUMNS]
    assert len(table) == 4 * 2  # 4 levels x 2 metrics x 1 treatment arm
    assert set(table["dimension"]) == {"country"}
    assert list(dict.fromkeys(table["level"])) == ["DE", "FR", "US", "(none)"]
    data = api.get(f"{URL}/results/breakdown", {"dimension": "country"}).json()
    de = data["levels"][0]["metrics"][0]
    first = table.iloc[0]
    assert (first["level"], first["metric"], first["variant"]) == ("DE", "purchase", "treatment")
    assert first["p_value"] == pytest.approx(de["p_value"])
    assert first["adjusted_p_value"] == pytest.approx(de["adjusted_p_value"])
    assert first["control_sum"] == de["control_stats"]["sum"]
    purchase = next(t for t in data["heterogeneity"] if t["metric"] == "purchase")
    assert first["heterogeneity_p_value"] == pytest.approx(purchase["p_value"])


def test_export_errors_name_the_parameter(api, bare):
    assert api.get(f"{URL}/export", {"dimension": ""}).json()["field"] == "dimension"
    response = api.get(f"{URL}/export", {"dimension": "country", "since": "2026-01-01"})
    assert response.status_code == 400 and response.json()["field"] == "since"
    response = api.get("/api/v1/projects/shop/results/export", {"dimension": "country"})
    assert response.status_code == 400 and response.json()["field"] == "dimension"
    response = api.get(f"{URL}/export", {"dimension": "country", "format": "xls"})
    assert response.status_code == 400 and "format" in response.json()


def test_viewers_may_not_export_a_breakdown(bare, make_member):
    viewer = APIClient()
    viewer.force_authenticate(make_member("vera", Role.VIEWER))
    assert viewer.get(f"{URL}/export?dimension=country").status_code == 403


def test_the_cli_exports_a_breakdown(shop, tmp_path):
    path = tmp_path / "by-country.parquet"
    call_command(
        "export_results", "--project", "shop", "--experiment", shop.key,
        "--dimension", "country", "--output", str(path),
    )  # fmt: skip
    table = pd.read_parquet(path)
    assert list(table.columns) == [c.name for c in BREAKDOWN_COLUMNS]
    assert set(table["level"]) == {"DE", "FR", "US", "(none)"}
    out = io.StringIO()
    call_command(
        "export_results", "--project", "shop", "--experiment", shop.key, "--dimension",
        "country", "--levels", "1", "--format", "json", stdout=out,
    )  # fmt: skip
    assert {r["level"] for r in json.loads(out.getvalue())["rows"]} == {"DE", "(other)", "(none)"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dimension", "country"], "pass --experiment"),
        (["--dimension", "country", "--experiment", "a,b"], "pass --experiment"),
        (["--dimension", "", "--experiment", "checkout-v2"], "'dimension' is required"),
        (["--dimension", "country", "--experiment", "nope"], "No experiment 'nope'"),
        (["--dimension", "country", "--experiment", "checkout-v2", "--latest"], "do not apply"),
        (["--dimension", "country", "--experiment", "checkout-v2", "--levels", "0"], "--levels"),
    ],
)
def test_cli_breakdown_errors_say_what_to_fix(bare, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("export_results", "--project", "shop", *args, stdout=io.StringIO())


def test_before_the_first_snapshot_the_cut_off_is_now(bare):
    """No snapshot yet: the breakdown reads up to now, and is not cached."""
    before = timezone.now()
    data = breakdown.experiment_breakdown(bare, "country")
    assert data["snapshot_id"] is None and data["levels"] == []
    assert before.isoformat() <= data["data_through"] <= timezone.now().isoformat()


def test_docs_list_the_breakdown_export_columns():
    """docs/exports.md "Breakdown exports" names every column with its type, in order."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "exports.md").read_text()
    section = text.split("## Breakdown exports", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \| (\w+) \|", section, flags=re.M)
    assert documented == [(c.name, c.type) for c in BREAKDOWN_COLUMNS]
