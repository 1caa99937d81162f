"""Results and export API: shapes, streaming, filters, and who may export (roles, API keys)."""

import io
import json
from datetime import timedelta

import pandas as pd
import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from analysis.models import AnalysisRun, ResultRow, ResultSnapshot
from analysis.selectors import results_history_page
from experiments.models import Role
from experiments.services import api_key_create, project_create
from tests.analysis.test_exports import seed_results

pytestmark = pytest.mark.django_db

BASE = "/api/v1/projects/shop"


@pytest.fixture
def history(project):
    return seed_results(project, looks=2, units=120)


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def body(response) -> bytes:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content)


def test_results_carry_the_contract_fields_and_the_new_ones(api, history):
    data = api.get(f"{BASE}/experiments/{history.key}/results").json()
    assert data["experiment"] == history.key and data["computed_at"]
    row = data["metrics"][0]
    for field in [
        "metric",
        "role",
        "variant",
        "control_n",
        "variant_n",
        "control_mean",
        "variant_mean",
        "lift_abs",
        "lift_rel",
        "ci_low",
        "ci_high",
        "p_value",
        "fixed_p_value",
        "method",
        "significant",
        "status",
        "adjusted_p_value",
        "alpha",
    ]:
        assert field in row, field
    assert {"action", "reasons", "ship_variant", "extra_units", "extra_days"} <= set(
        data["recommendation"]
    )
    assert data["last_run"]["status"] == "succeeded"


def test_history_lists_snapshots_oldest_first(api, history):
    data = api.get(f"{BASE}/experiments/{history.key}/results/history").json()
    times = [s["computed_at"] for s in data["snapshots"]]
    assert len(times) == 2 and times == sorted(times)


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("csv", "text/csv; charset=utf-8"),
        ("json", "application/json"),
        ("parquet", "application/vnd.apache.parquet"),
    ],
)
def test_experiment_export_streams_each_format_as_a_download(api, history, fmt, content_type):
    response = api.get(f"{BASE}/experiments/{history.key}/export", {"format": fmt})
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="abacus-shop-checkout-v2-history-')
    assert disposition.endswith(f'.{fmt}"')
    data = body(response)
    if fmt == "csv":
        frame = pd.read_csv(io.BytesIO(data))
    elif fmt == "json":
        frame = pd.DataFrame(json.loads(data)["rows"])
    else:
        frame = pd.read_parquet(io.BytesIO(data))
    assert len(frame) == 12 and set(frame.experiment) == {history.key}


def test_export_defaults_to_csv_and_latest_keeps_one_snapshot(api, history):
    response = api.get(f"{BASE}/experiments/{history.key}/export", {"latest": "true"})
    assert response["Content-Type"].startswith("text/csv")
    frame = pd.read_csv(io.BytesIO(body(response)))
    assert list(frame.snapshot_id.unique()) == [history.snapshots.latest().pk]


def test_export_history_looks_keeps_the_counted_looks(api, history):
    first, last = history.snapshots.order_by("data_through")
    ResultSnapshot.objects.filter(pk=first.pk).update(look_kind="collecting")
    ResultSnapshot.objects.filter(pk=last.pk).update(look_kind="look")
    url = f"{BASE}/experiments/{history.key}/export"
    response = api.get(url, {"format": "parquet", "history": "looks"})
    assert response.status_code == 200 and "-looks-" in response["Content-Disposition"]
    frame = pd.read_parquet(io.BytesIO(body(response)))
    assert set(frame.snapshot_id) == {last.pk} and set(frame.look_number) == {1}
    assert len(frame) == 6


def test_project_export_filters_by_experiment_status_and_date(api, project, history):
    other = seed_results(project, "pricing", looks=1, units=60, seed=5)
    url = f"{BASE}/results/export"
    everything = json.loads(body(api.get(url, {"format": "json"})))["rows"]
    assert {r["experiment"] for r in everything} == {history.key, other.key}
    only = json.loads(body(api.get(url, {"format": "json", "experiment": "pricing"})))["rows"]
    assert {r["experiment"] for r in only} == {"pricing"}
    running = json.loads(body(api.get(url, {"format": "json", "status": "running,paused"})))
    assert len(running["rows"]) == len(everything)
    none = json.loads(body(api.get(url, {"format": "json", "status": "concluded"})))
    assert none == {"rows": []}
    future = json.loads(body(api.get(url, {"format": "json", "since": "2999-01-01"})))
    assert future == {"rows": []}


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"format": "xlsx"}, "format", "'xlsx' is not an export format"),
        ({"status": "live"}, "status", "Unknown status 'live'"),
        ({"experiment": "ghost"}, "experiment", "No experiment 'ghost'"),
        ({"since": "last week"}, "since", "is not a date"),
        ({"since": "2026-12-02", "until": "2026-12-01"}, "since", "'since' must be before"),
        ({"history": "some"}, "history", "'some' is not a history"),
    ],
)
def test_bad_export_parameters_answer_400_naming_the_parameter(
    api, history, params, field, message
):
    response = api.get(f"{BASE}/results/export", params)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    data = response.json()
    text = data.get("detail") or data.get(field)[0]
    assert message in text
    if "field" in data:
        assert data["field"] == field


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.ADMIN, True), (Role.EDITOR, True), (Role.ANALYST, True), (Role.VIEWER, False)],
)
def test_people_export_per_their_role(make_member, history, role, allowed):
    client = client_for(make_member(f"user-{role}", role))
    for url in (f"{BASE}/experiments/{history.key}/export", f"{BASE}/results/export"):
        response = client.get(url, {"format": "json"})
        assert response.status_code == (200 if allowed else 403), url
        if not allowed:
            assert "viewer" in response.json()["detail"] and "export" in response.json()["detail"]
    # every member reads the results
    assert client.get(f"{BASE}/experiments/{history.key}/results").status_code == 200


def test_non_members_and_anonymous_cannot_export(django_user_model, history):
    stranger = django_user_model.objects.create_user("mallory", "m@example.com", "pw-12345")
    assert client_for(stranger).get(f"{BASE}/results/export").status_code == 404
    assert APIClient().get(f"{BASE}/results/export").status_code in (401, 403)


def test_api_keys_need_the_read_scope_and_their_own_project(project, history, admin_user):
    def key_client(proj, scopes) -> APIClient:
        client = APIClient()
        secret = api_key_create(project=proj, name=f"k-{proj.slug}-{scopes}", scopes=scopes).secret
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    reader = key_client(project, ["read"])
    response = reader.get(f"{BASE}/experiments/{history.key}/export", {"format": "parquet"})
    assert response.status_code == 200
    assert len(pd.read_parquet(io.BytesIO(body(response)))) == 12
    assert reader.get(f"{BASE}/results/export").status_code == 200

    ingest_only = key_client(project, ["ingest"])
    response = ingest_only.get(f"{BASE}/results/export")
    assert response.status_code == 403 and "read" in response.json()["detail"]

    elsewhere = key_client(project_create(slug="other", name="Other", owner=admin_user), ["read"])
    assert elsewhere.get(f"{BASE}/results/export").status_code == 404


def test_analyze_queues_a_run_that_the_results_report(
    api, history, monkeypatch, django_capture_on_commit_callbacks
):
    """POST analyze answers 202 with a queued run and sends its task once committed."""
    sent = []
    monkeypatch.setattr("analysis.tasks.run_analysis.delay", lambda *args: sent.append(args))
    before = ResultSnapshot.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{BASE}/experiments/{history.key}/analyze")
    assert response.status_code == 202
    run = AnalysisRun.objects.get(pk=response.json()["run_id"])
    assert run.status == "queued" and sent == [(history.pk, run.pk)]
    results = api.get(f"{BASE}/experiments/{history.key}/results").json()
    assert results["last_run"]["id"] == run.pk and results["last_run"]["status"] == "queued"
    assert ResultSnapshot.objects.count() == before


def copy_snapshots(experiment, count: int) -> None:
    """``count`` more snapshots like the latest (with its rows), one hour apart after it."""
    latest = ResultSnapshot.objects.filter(experiment=experiment).latest("data_through")
    rows = list(latest.rows.all())
    for i in range(1, count + 1):
        copy = ResultSnapshot.objects.get(pk=latest.pk)
        copy.pk, copy.run = None, None
        copy.data_through = latest.data_through + timedelta(hours=i)
        copy.save()
        for row in rows:
            row.pk, row.snapshot = None, copy
        ResultRow.objects.bulk_create(rows)


def test_history_pages_oldest_first_with_the_total(api, history):
    copy_snapshots(history, 3)  # 5 snapshots
    url = f"{BASE}/experiments/{history.key}/results/history"
    first = api.get(url, {"limit": 2}).json()
    assert (first["page"], first["limit"], first["total"], first["pages"]) == (1, 2, 5, 3)
    assert first["next_page"] == 2 and first["experiment"] == history.key
    pages = [first] + [api.get(url, {"limit": 2, "page": p}).json() for p in (2, 3)]
    assert [len(p["snapshots"]) for p in pages] == [2, 2, 1] and pages[-1]["next_page"] is None
    cutoffs = [s["data_through"] for p in pages for s in p["snapshots"]]
    assert cutoffs == sorted(cutoffs) and len(set(cutoffs)) == 5
    everything = api.get(url).json()  # the default page holds them all here
    assert [s["data_through"] for s in everything["snapshots"]] == cutoffs
    assert everything["snapshots"][0]["metrics"] and everything["snapshots"][-1]["metrics"]


@pytest.mark.parametrize(
    "params",
    [{"page": "0"}, {"limit": "0"}, {"limit": "501"}, {"page": "x"}, {"page": str(2**63)}],
)
def test_history_refuses_bad_page_parameters(api, history, params):
    url = f"{BASE}/experiments/{history.key}/results/history"
    response = api.get(url, params)
    assert response.status_code == 400 and set(response.json()) <= {"page", "limit"}


def test_history_reads_a_constant_number_of_queries(api, history, django_assert_num_queries):
    """The count, the page's snapshots and the page's rows (plus the request's own lookups),
    however many snapshots the page holds."""
    url = f"{BASE}/experiments/{history.key}/results/history"
    with CaptureQueriesContext(connection) as few:
        assert len(api.get(url).json()["snapshots"]) == 2
    copy_snapshots(history, 30)
    with django_assert_num_queries(len(few.captured_queries)):
        assert len(api.get(url).json()["snapshots"]) == 32
    with django_assert_num_queries(3):
        page = results_history_page(history, page=2, limit=10)
    assert len(page["snapshots"]) == 10 and page["total"] == 32
