"""The library of decided experiments: search, filters, stored lifts, page and API."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from analysis.library import library_search
from analysis.models import ResultRow, ResultSnapshot
from experiments.models import Role
from experiments.services import (
    api_key_create,
    experiment_conclude,
    experiment_create,
    experiment_rollback,
)
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db


def snapshot(experiment, recommendation, ship="", lift=0.1, days_ago=0):
    at = timezone.now() - timezone.timedelta(days=days_ago)
    snap = ResultSnapshot.objects.create(
        experiment=experiment,
        computed_at=at,
        data_through=at,
        method="sequential",
        recommendation=recommendation,
        ship_variant=ship,
    )
    common = {"snapshot": snap, "metric_kind": "binomial", "n": 1000}
    ResultRow.objects.create(
        **common, metric_key="purchase", role="primary", variant="control", is_control=True
    )
    ResultRow.objects.create(
        **common,
        metric_key="purchase",
        role="primary",
        variant="treatment",
        lift_rel=lift,
        ci_low=lift - 0.05,
        ci_high=lift + 0.05,
        significant=True,
        status="improved",
    )
    ResultRow.objects.create(
        **common, metric_key="revenue", role="secondary", variant="treatment", lift_rel=0.5
    )
    return snap


@pytest.fixture
def decided(project, metrics):
    shipped = running_experiment(
        project,
        "one-page-checkout",
        name="One-page checkout",
        hypothesis="Fewer steps convert better.",
        tags=["checkout", "Mobile"],
    )
    snapshot(shipped, "rollback", lift=0.02, days_ago=2)
    snapshot(shipped, "keep", "treatment", lift=0.08)
    experiment_conclude(experiment=shipped, decision="treatment")
    kept = running_experiment(
        project,
        "price-anchor",
        name="Price anchor",
        hypothesis="Anchors lift revenue.",
        tags=["pricing"],
    )
    snapshot(kept, "keep", "treatment", lift=0.03)
    experiment_conclude(
        experiment=kept, decision="control", rationale="Brand team vetoed the anchor copy."
    )
    rolled = running_experiment(project, "dark-mode", name="Dark mode", tags=["ui", "über"])
    experiment_rollback(experiment=rolled, reason="crashes")
    running_experiment(project, "still-running", tags=["checkout"])
    experiment_create(project=project, **experiment_payload("a-draft", tags=["checkout"]))
    return shipped, kept, rolled


def keys(entries):
    return [e.key for e in entries]


def test_lists_decided_experiments_with_the_last_snapshots_primary_lifts(project, decided):
    entries = {e.key: e for e in library_search(project)}
    assert sorted(entries) == ["dark-mode", "one-page-checkout", "price-anchor"]
    shipped = entries["one-page-checkout"]
    assert shipped.decision == "ship" and shipped.decision_label == "Shipped treatment"
    assert shipped.recommendation == "keep"
    assert [(x.metric, x.variant, x.lift_rel) for x in shipped.lifts] == [
        ("purchase", "treatment", 0.08)
    ]
    assert shipped.lifts[0].ci_low == pytest.approx(0.03)
    kept = entries["price-anchor"]
    assert kept.decision == "keep_control" and kept.rationale.startswith("Brand team")
    assert entries["dark-mode"].decision == "rolled_back" and entries["dark-mode"].lifts == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"q": "fewer steps"}, ["one-page-checkout"]),
        ({"q": "VETOED"}, ["price-anchor"]),
        ({"q": "pricing"}, ["price-anchor"]),
        ({"q": "über"}, ["dark-mode"]),
        ({"q": "dark"}, ["dark-mode"]),
        ({"tag": "mobile"}, ["one-page-checkout"]),
        ({"tag": "check"}, []),
        ({"tag": "checkout"}, ["one-page-checkout"]),
        ({"decision": "ship"}, ["one-page-checkout"]),
        ({"decision": "keep_control"}, ["price-anchor"]),
        ({"decision": "rolled_back"}, ["dark-mode"]),
        ({"decision": "ship", "tag": "pricing"}, []),
        ({"q": "nothing like this"}, []),
    ],
)
def test_search_and_filters(project, decided, query, expected):
    assert sorted(keys(library_search(project, **query))) == expected


def test_reads_in_a_fixed_number_of_queries(project, decided):
    with CaptureQueriesContext(connection) as queries:
        library_search(project)
    assert len(queries) == 2


def test_library_api(api, project, decided):
    r = api.get("/api/v1/projects/shop/library/", {"q": "anchor"})
    assert r.status_code == 200
    [entry] = r.json()
    assert entry["key"] == "price-anchor" and entry["decision"] == "keep_control"
    assert entry["rationale"] == "Brand team vetoed the anchor copy."
    assert entry["tags"] == ["pricing"] and entry["recommendation"] == "keep"
    assert entry["lifts"][0]["metric"] == "purchase"
    assert entry["lifts"][0]["lift_rel"] == pytest.approx(0.03)
    assert entry["lifts"][0]["ci_low"] == pytest.approx(-0.02)
    r = api.get("/api/v1/projects/shop/library/", {"tag": "Mobile", "decision": "ship"})
    assert [e["key"] for e in r.json()] == ["one-page-checkout"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"decision": "won"}, "decision"), ({"q": "x" * 201}, "q"), ({"tag": "t" * 51}, "tag")],
)
def test_library_api_400s_name_the_field(api, project, decided, params, field):
    r = api.get("/api/v1/projects/shop/library/", params)
    assert r.status_code == 400 and field in r.json()


def test_library_api_access(project, decided, django_user_model):
    stranger = django_user_model.objects.create_user("mallory", "m@example.com", "pw-12345")
    client = APIClient()
    client.force_authenticate(stranger)
    assert client.get("/api/v1/projects/shop/library/").status_code == 404
    key = api_key_create(project=project, name="reader", scopes=["read"]).secret
    service = APIClient()
    service.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert service.get("/api/v1/projects/shop/library/").status_code == 200


def test_library_page(project, decided, make_member):
    client = Client()
    client.force_login(make_member("viewer", Role.VIEWER))
    assert 'href="/p/shop/library/"' in client.get("/p/shop/").content.decode()
    r = client.get("/p/shop/library/")
    html = r.content.decode()
    assert r.status_code == 200
    for key in ("one-page-checkout", "price-anchor", "dark-mode"):
        assert f'data-key="{key}"' in html
    assert 'data-key="still-running"' not in html and 'data-key="a-draft"' not in html
    assert "Brand team vetoed the anchor copy." in html
    assert "+8.00%" in html and "+3.00% to +13.00%" in html
    filtered = client.get("/p/shop/library/", {"q": "vetoed", "decision": "bogus"})
    page = filtered.content.decode()
    assert 'data-key="price-anchor"' in page and 'data-key="dark-mode"' not in page
    tag = client.get("/p/shop/library/", {"tag": "ui"}).content.decode()
    assert 'data-key="dark-mode"' in tag and 'data-key="price-anchor"' not in tag


def test_library_page_empty(project, metrics, admin_user):
    client = Client()
    client.force_login(admin_user)
    r = client.get("/p/shop/library/")
    assert r.status_code == 200 and "No experiment has been concluded" in r.content.decode()
