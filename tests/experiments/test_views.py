"""The PM web pages: access by role, the experiment form with inline errors, lifecycle buttons,
the metric catalog and project settings."""

from typing import Any

import pytest
from django.db import transaction
from django.test import Client

from experiments.models import ApiKey, Experiment, ExperimentStatus, Membership, Metric, Role
from experiments.services import experiment_create, project_create
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db


def rows(prefix: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        f"{prefix}-TOTAL_FORMS": str(len(items)),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for i, item in enumerate(items):
        for name, value in item.items():
            if value is True:
                value = "on"
            if value is False:
                continue
            data[f"{prefix}-{i}-{name}"] = value
    return data


def form_data(
    variants: list[dict] | None = None,
    metrics: list[dict] | None = None,
    ramp: list[dict] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": "checkout-v2",
        "name": "Checkout v2",
        "hypothesis": "A shorter checkout converts better.",
        "owner": "",
        "hash_attribute": "id",
        "coverage": "1",
        "targeting": "",
        "layer": "",
        "layer_start": "0",
        "layer_end": "1",
        "alpha": "0.05",
        "decision_policy": "superiority",
        "planned_sample_size": "",
        "mde": "",
        "end_date": "",
    }
    data.update(fields)
    data.update(
        rows(
            "variants",
            variants
            if variants is not None
            else [
                {"key": "control", "name": "Control", "weight": "0.5", "is_control": True},
                {"key": "treatment", "name": "Treatment", "weight": "0.5", "value": '{"v": 2}'},
            ],
        )
    )
    data.update(
        rows(
            "metrics",
            metrics
            if metrics is not None
            else [
                {"metric": "purchase", "role": "primary"},
                {"metric": "revenue", "role": "guardrail", "non_inferiority_margin": "0.02"},
            ],
        )
    )
    data.update(rows("ramp", ramp or []))
    return data


@pytest.fixture
def as_user(make_member):
    def login(role: str) -> Client:
        client = Client()
        client.force_login(make_member(f"u-{role}", role))
        return client

    return login


@pytest.fixture
def alice(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


# --- access -------------------------------------------------------------------------------

PAGES = [
    ("get", "/p/shop/", "read"),
    ("get", "/p/shop/experiments/checkout-v2/", "read"),
    ("get", "/p/shop/metrics/", "read"),
    ("get", "/p/shop/experiments/new/", "edit"),
    ("get", "/p/shop/experiments/checkout-v2/edit/", "edit"),
    ("post", "/p/shop/experiments/checkout-v2/start/", "edit"),
    ("get", "/p/shop/metrics/new/", "edit"),
    ("get", "/p/shop/metrics/purchase/edit/", "edit"),
    ("post", "/p/shop/metrics/revenue/delete/", "edit"),
    ("get", "/p/shop/settings/", "manage"),
    ("post", "/p/shop/settings/members/", "manage"),
    ("post", "/p/shop/settings/api-keys/", "manage"),
]
GRANTS = {
    Role.ADMIN: {"read", "edit", "manage"},
    Role.EDITOR: {"read", "edit"},
    Role.ANALYST: {"read"},
    Role.VIEWER: {"read"},
}


@pytest.mark.parametrize(("method", "url", "permission"), PAGES, ids=[p[1] for p in PAGES])
def test_every_page_checks_membership_and_role(
    project, metrics, as_user, django_user_model, method, url, permission
):
    experiment_create(project=project, **experiment_payload())
    for role, granted in GRANTS.items():
        client = as_user(role)
        with transaction.atomic():  # every role sees the same state
            r = getattr(client, method)(url)
            transaction.set_rollback(True)
        if permission in granted:
            assert r.status_code in (200, 302), (role, r.status_code)
        else:
            assert r.status_code == 403, (role, r.status_code)
            assert b"may not" in r.content
    outsider = django_user_model.objects.create_user("mallory", "m@example.com", "pw-123456")
    project_create(slug="evil", name="Evil", owner=outsider)
    client = Client()
    client.force_login(outsider)
    assert getattr(client, method)(url).status_code == 404


def test_anonymous_is_sent_to_login(project):
    r = Client().get("/p/shop/")
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")


def test_viewer_sees_no_lifecycle_buttons(project, metrics, as_user):
    running_experiment(project)
    body = as_user(Role.VIEWER).get("/p/shop/experiments/checkout-v2/").content.decode()
    assert "action-pause" not in body and "can view this experiment but not run it" in body


# --- the experiment list ------------------------------------------------------------------------


def test_list_filters_by_status_text_and_owner(project, metrics, alice, admin_user):
    experiment_create(project=project, actor=admin_user, **experiment_payload("pricing-page"))
    running_experiment(project, "search-ranking")
    body = alice.get("/p/shop/?status=running").content.decode()
    assert "search-ranking" in body and "pricing-page" not in body
    body = alice.get("/p/shop/?q=pricing").content.decode()
    assert "pricing-page" in body and "search-ranking" not in body
    body = alice.get("/p/shop/?owner=alice").content.decode()
    assert "pricing-page" in body and "search-ranking" not in body
    assert 'id="experiments"' in body


# --- creating and editing ------------------------------------------------------------------


def test_create_experiment_from_the_form(project, metrics, alice):
    r = alice.post(
        "/p/shop/experiments/new/",
        form_data(
            targeting='{"country": {"$in": ["US", "CA"]}}',
            planned_sample_size="20000",
            mde="0.05",
            ramp=[{"coverage": "0.1", "min_hours": "24"}, {"coverage": "0.5", "min_hours": "24"}],
        ),
    )
    assert r.status_code == 302 and r["Location"] == "/p/shop/experiments/checkout-v2/"
    experiment = Experiment.objects.get(key="checkout-v2")
    assert experiment.owner.username == "alice" and experiment.status == ExperimentStatus.DRAFT
    assert experiment.targeting == {"country": {"$in": ["US", "CA"]}}
    assert [(v.key, v.weight, v.is_control, v.value) for v in experiment.variants.all()] == [
        ("control", 0.5, True, None),
        ("treatment", 0.5, False, {"v": 2}),
    ]
    assert [
        (m.metric.key, m.role, m.non_inferiority_margin)
        for m in experiment.experiment_metrics.all()
    ] == [
        ("purchase", "primary", None),
        ("revenue", "guardrail", 0.02),
    ]
    assert experiment.ramp_stages == [
        {"coverage": 0.1, "min_hours": 24.0},
        {"coverage": 0.5, "min_hours": 24.0},
    ]


def test_new_form_renders_with_two_variants_and_the_calculator(project, metrics, alice):
    body = alice.get("/p/shop/experiments/new/").content.decode()
    assert 'name="variants-1-key"' in body and 'value="treatment"' in body
    assert 'id="power-calculator"' in body and 'data-power-url="/api/v1/power"' in body
    assert "<script>" not in body  # no inline code: the CSP forbids it


def test_bad_weights_are_shown_inline_and_nothing_is_saved(project, metrics, alice):
    r = alice.post(
        "/p/shop/experiments/new/",
        form_data(
            variants=[
                {"key": "control", "weight": "0.5", "is_control": True},
                {"key": "treatment", "weight": "0.6"},
            ]
        ),
    )
    assert r.status_code == 200
    body = r.content.decode()
    assert "Weights must sum to 1; they sum to 1.1" in body and 'id="form-errors"' in body
    assert not Experiment.objects.exists()
    # The form keeps what was typed.
    assert 'value="0.6"' in body


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"targeting": '{"country": '}, "Not valid JSON"),
        ({"targeting": '{"country": {"$inn": ["US"]}}'}, "$inn"),
        ({"layer": "l", "layer_start": "0.6", "layer_end": "0.4"}, "The layer range must satisfy"),
        ({"key": "Not a slug!"}, "Enter a valid"),
        ({"key": "new"}, "reserved"),
        ({"coverage": "1.5"}, "less than or equal to 1"),
    ],
)
def test_field_errors_are_shown_next_to_the_field(project, metrics, alice, fields, message):
    r = alice.post("/p/shop/experiments/new/", form_data(**fields))
    assert r.status_code == 200 and message in r.content.decode()
    assert not Experiment.objects.exists()


def test_two_controls_and_duplicate_metrics_are_refused(project, metrics, alice):
    r = alice.post(
        "/p/shop/experiments/new/",
        form_data(
            variants=[
                {"key": "control", "weight": "0.5", "is_control": True},
                {"key": "treatment", "weight": "0.5", "is_control": True},
            ],
            metrics=[
                {"metric": "purchase", "role": "primary"},
                {"metric": "purchase", "role": "secondary"},
            ],
        ),
    )
    body = r.content.decode()
    assert "Exactly one variant must be the control (found 2)." in body
    assert "Metric &#x27;purchase&#x27; is listed twice." in body


def test_service_refusal_lands_on_the_field(project, metrics, alice):
    experiment_create(project=project, **experiment_payload())
    r = alice.post("/p/shop/experiments/new/", form_data())
    assert "already exists in this project" in r.content.decode()


def test_removed_rows_are_ignored(project, metrics, alice):
    data = form_data(
        variants=[
            {"key": "control", "weight": "0.5", "is_control": True},
            {"key": "treatment", "weight": "0.5"},
            {"key": "extra", "weight": "0.9", "DELETE": True},
        ]
    )
    assert alice.post("/p/shop/experiments/new/", data).status_code == 302
    assert Experiment.objects.get().variants.count() == 2


def test_edit_a_draft(project, metrics, alice):
    experiment_create(project=project, **experiment_payload())
    r = alice.post(
        "/p/shop/experiments/checkout-v2/edit/",
        form_data(
            name="Checkout v3",
            variants=[
                {"key": "control", "weight": "0.2", "is_control": True},
                {"key": "treatment", "weight": "0.8"},
            ],
        ),
    )
    assert r.status_code == 302
    experiment = Experiment.objects.get()
    assert experiment.name == "Checkout v3"
    assert [v.weight for v in experiment.variants.all()] == [0.2, 0.8]


def test_edit_running_freezes_variants_and_design(project, metrics, alice):
    running_experiment(project, planned_sample_size=1000)
    body = alice.get("/p/shop/experiments/checkout-v2/edit/").content.decode()
    assert 'id="variants-frozen"' in body and 'name="variants-0-key"' not in body
    assert 'id="live-note"' in body
    # Tampered frozen fields are ignored (disabled), other fields are saved.
    data = form_data(name="Renamed", alpha="0.2", planned_sample_size="5", coverage="0.1")
    r = alice.post("/p/shop/experiments/checkout-v2/edit/", data)
    assert r.status_code == 302
    experiment = Experiment.objects.get()
    assert experiment.name == "Renamed" and experiment.alpha == 0.05
    assert experiment.planned_sample_size == 1000 and experiment.coverage == 1.0


def test_edit_running_refuses_dropping_the_primary_metric(project, metrics, alice):
    running_experiment(project)
    data = form_data(metrics=[{"metric": "revenue", "role": "secondary"}])
    r = alice.post("/p/shop/experiments/checkout-v2/edit/", data)
    assert r.status_code == 200
    assert "primary metric of a live experiment" in r.content.decode()


# --- the experiment page and its lifecycle ------------------------------------------------------


def test_detail_page_shows_definition_audit_and_results_link(project, metrics, alice):
    running_experiment(project, coverage=0.25, targeting={"country": "US"})
    body = alice.get("/p/shop/experiments/checkout-v2/").content.decode()
    assert 'href="/p/shop/experiments/checkout-v2/results/"' in body
    assert "experiment.start" in body and "experiment.create" in body
    assert 'id="action-pause"' in body and 'id="action-ramp"' in body
    assert 'id="action-start"' not in body
    assert "25%" in body and "&quot;country&quot;: &quot;US&quot;" in body


def test_detail_page_at_full_coverage_offers_no_ramp(project, metrics, alice):
    running_experiment(project)
    body = alice.get("/p/shop/experiments/checkout-v2/").content.decode()
    assert 'id="full-coverage"' in body and 'id="action-ramp"' not in body


def test_lifecycle_through_the_buttons(project, metrics, alice):
    experiment_create(project=project, **experiment_payload(coverage=0.2))
    base = "/p/shop/experiments/checkout-v2"
    for action, data in [
        ("start", {}),
        ("pause", {}),
        ("resume", {}),
        ("ramp", {"coverage": "0.5"}),
        ("conclude", {"decision": "treatment"}),
    ]:
        r = alice.post(f"{base}/{action}/", data, follow=True)
        assert r.status_code == 200
        assert "Could not" not in r.content.decode(), (action, r.content.decode())
    experiment = Experiment.objects.get()
    assert experiment.status == "concluded" and experiment.coverage == 0.5
    body = alice.get(f"{base}/").content.decode()
    assert "ship treatment" in body and "nothing can change it" in body


def test_refused_action_says_what_to_fix(project, metrics, alice):
    running_experiment(project, coverage=0.5)
    r = alice.post("/p/shop/experiments/checkout-v2/ramp/", {"coverage": "0.2"}, follow=True)
    assert "Could not ramp: Coverage may only go up" in r.content.decode()
    r = alice.post("/p/shop/experiments/checkout-v2/ramp/", {"coverage": "abc"}, follow=True)
    assert "New coverage: Enter a number." in r.content.decode()


def test_rollback_and_delete_buttons(project, metrics, alice):
    running_experiment(project)
    alice.post("/p/shop/experiments/checkout-v2/rollback/", {"reason": "errors up"})
    assert Experiment.objects.get().status == ExperimentStatus.ROLLED_BACK
    experiment_create(project=project, **experiment_payload("draft-one"))
    r = alice.post("/p/shop/experiments/draft-one/delete/")
    assert r.status_code == 302 and r["Location"] == "/p/shop/"
    assert not Experiment.objects.filter(key="draft-one").exists()
    r = alice.post("/p/shop/experiments/checkout-v2/delete/", follow=True)
    assert "Only a draft can be deleted" in r.content.decode()


def test_actions_need_post_and_hide_foreign_projects(project, metrics, alice, django_user_model):
    experiment_create(project=project, **experiment_payload())
    assert alice.get("/p/shop/experiments/checkout-v2/start/").status_code == 405
    assert alice.get("/p/shop/settings/api-keys/").status_code == 405
    outsider = django_user_model.objects.create_user("mallory", "m@example.com", "pw-123456")
    client = Client()
    client.force_login(outsider)
    assert client.get("/p/shop/experiments/checkout-v2/start/").status_code == 404


# --- metric catalog -------------------------------------------------------------------------


METRIC = {
    "key": "aov",
    "name": "Average order value",
    "description": "",
    "kind": "ratio",
    "event_name": "revenue",
    "denominator_event": "order",
    "direction": "increase",
    "conversion_window_hours": "72",
    "winsorize_quantile": "0.99",
    "cuped": "on",
}


def test_create_metric_and_see_it_in_the_catalog(project, alice):
    r = alice.post("/p/shop/metrics/new/", METRIC)
    assert r.status_code == 302
    metric = Metric.objects.get(key="aov")
    assert metric.kind == "ratio" and metric.winsorize_quantile == 0.99 and metric.cuped
    assert "Average order value" in alice.get("/p/shop/metrics/").content.decode()


def test_conversion_window_beyond_a_year_is_shown_on_its_field(project, alice):
    r = alice.post("/p/shop/metrics/new/", {**METRIC, "conversion_window_hours": "2000000000"})
    assert r.status_code == 200 and not Metric.objects.exists()
    assert r.context["form"].errors["conversion_window_hours"] == [
        "Ensure this value is less than or equal to 8760."
    ]


def test_ratio_metric_without_denominator_is_refused_inline(project, alice):
    r = alice.post("/p/shop/metrics/new/", {**METRIC, "denominator_event": ""})
    assert r.status_code == 200 and "needs a denominator event" in r.content.decode()


def test_metric_used_by_a_live_experiment_is_frozen_and_undeletable(project, metrics, alice):
    running_experiment(project)
    body = alice.get("/p/shop/metrics/purchase/edit/").content.decode()
    assert 'id="metric-frozen"' in body
    data = {
        **METRIC,
        "key": "purchase",
        "name": "Purchases",
        "kind": "binomial",
        "event_name": "checkout",
        "denominator_event": "",
    }
    assert alice.post("/p/shop/metrics/purchase/edit/", data).status_code == 302
    metric = Metric.objects.get(key="purchase")
    assert metric.name == "Purchases" and metric.event_name == "purchase"
    r = alice.post("/p/shop/metrics/purchase/delete/", follow=True)
    assert "is used by experiment(s) checkout-v2" in r.content.decode()
    alice.post("/p/shop/metrics/revenue/delete/")
    assert not Metric.objects.filter(key="revenue").exists()


# --- settings --------------------------------------------------------------------------------


def test_admin_adds_changes_and_removes_members(project, alice, django_user_model):
    r = alice.post(
        "/p/shop/settings/members/",
        {"username": "pat", "role": "editor", "email": "", "password": "a-long-password-1"},
    )
    assert r.status_code == 302
    pat = django_user_model.objects.get(username="pat")
    assert Membership.objects.get(user=pat).role == "editor"
    alice.post("/p/shop/settings/members/pat/role/", {"role": "analyst"})
    assert Membership.objects.get(user=pat).role == "analyst"
    r = alice.post("/p/shop/settings/members/alice/remove/", follow=True)
    assert "only admin" in r.content.decode()
    alice.post("/p/shop/settings/members/pat/remove/")
    assert not Membership.objects.filter(user=pat).exists()


def test_unknown_user_without_password_is_explained(project, alice):
    r = alice.post("/p/shop/settings/members/", {"username": "ghost", "role": "viewer"})
    assert r.status_code == 200 and "Give a password to create their account" in r.content.decode()


def test_api_key_secret_is_shown_once(project, alice):
    r = alice.post("/p/shop/settings/api-keys/", {"name": "checkout-api", "scopes": ["assign"]})
    assert r.status_code == 200 and "no-store" in r["Cache-Control"]
    key = ApiKey.objects.get(name="checkout-api")
    body = r.content.decode()
    start = body.index('id="secret-value"')
    secret = body[body.index('value="', start - 80) + 7 :].split('"')[0]
    assert secret.startswith(f"abk_{key.prefix}_")
    assert secret not in alice.get("/p/shop/settings/").content.decode()
    alice.post(f"/p/shop/settings/api-keys/{key.pk}/revoke/")
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_settings_list_environments_and_make_a_key_for_one(project, alice):
    page = alice.get("/p/shop/settings/").content.decode()
    for environment in project.environments.all():
        assert environment.client_key in page
    r = alice.post(
        "/p/shop/settings/api-keys/",
        {"name": "staging-api", "scopes": ["evaluate"], "environment": "staging"},
    )
    assert r.status_code == 200
    key = ApiKey.objects.get(name="staging-api")
    assert (key.environment.key, key.scopes) == ("staging", ["evaluate"])
    r = alice.post(
        "/p/shop/settings/api-keys/", {"name": "x", "scopes": ["read"], "environment": "moon"}
    )
    assert "Select a valid choice" in r.content.decode()
    assert not ApiKey.objects.filter(name="x").exists()
    alice.post("/p/shop/settings/api-keys/", {"name": "default-env", "scopes": ["read"]})
    assert ApiKey.objects.get(name="default-env").environment.key == "production"


def test_api_key_needs_a_scope(project, alice):
    r = alice.post("/p/shop/settings/api-keys/", {"name": "x"})
    assert r.status_code == 200 and "This field is required" in r.content.decode()
    assert not ApiKey.objects.filter(name="x").exists()


# --- home ------------------------------------------------------------------------------------


def test_create_a_project_from_home(admin_user, django_user_model, settings):
    settings.ABACUS_PROJECT_CREATION = "anyone"  # alice is no staff
    client = Client()
    client.force_login(admin_user)
    r = client.post("/", {"slug": "growth", "name": "Growth"})
    assert r.status_code == 302 and r["Location"] == "/p/growth/"
    r = client.post("/", {"slug": "growth", "name": "Again"})
    assert "is not available" in r.content.decode()


def test_detail_page_says_when_and_on_what_the_ramp_advances(project, metrics, alice):
    running_experiment(
        project,
        ramp_stages=[
            {"coverage": 0.1, "min_hours": 24},
            {"coverage": 0.5, "min_hours": 24, "min_units": 800},
            {"coverage": 1.0, "min_hours": 0},
        ],
    )
    body = alice.get("/p/shop/experiments/checkout-v2/").content.decode()
    assert "Stages advance automatically" in body
    assert "every arm has at least 100 units" in body
    assert "The next stage (50%) may start after" in body and "once every arm has 100 units" in body
