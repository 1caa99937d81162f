"""The release pages: every member reads the list, the form and the monitoring page (and its
JSON); outsiders get 404, other projects' releases are 404; the form starts a release and puts a
service's refusal on the field it names; pause / resume / advance / roll back ask first, move the
release when confirmed, and are refused for viewers (and, in production, for editors)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import numpy as np
import pytest
from django.test import Client

from experiments.models import Environment, Role
from experiments.services import project_create
from flags.services import flag_create, flag_environment_update
from releases.models import Release, ReleaseStatus
from releases.monitor import release_analyze
from releases.services import release_create
from releases.validation import DEFAULT_CANARY_STEPS

from .conftest import simulate

pytestmark = pytest.mark.django_db

STEPS = [
    {"percent": 10, "min_minutes": 0, "min_units": 200},
    {"percent": 50, "min_minutes": 30, "min_units": 200},
    {"percent": 100, "min_minutes": 0, "min_units": 0},
]
METRICS = [{"metric": "error-rate", "non_inferiority_margin": 0.1}, {"metric": "latency-p95"}]


def client_for(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.fixture
def admin(admin_user) -> Client:
    return client_for(admin_user)


@pytest.fixture
def viewer(make_member) -> Client:
    return client_for(make_member("vera", Role.VIEWER))


@pytest.fixture
def editor(make_member) -> Client:
    return client_for(make_member("eddie", Role.EDITOR))


@pytest.fixture
def outsider(django_user_model) -> Client:
    return client_for(django_user_model.objects.create_user("olga", "o@example.com", "pw-12345"))


@pytest.fixture
def release(project, flag, production, admin_user, health_metrics):
    return release_create(
        project=project, flag=flag, environment=production, variation="on", steps=STEPS,
        metrics=METRICS, actor=admin_user,
    )  # fmt: skip


@pytest.fixture
def checked(release, project, flag, production):
    """The release after one analysis that advanced it from 10% to 50%, and one that holds."""
    rng = np.random.default_rng(7)
    at = release.step_started_at + timedelta(seconds=5)
    simulate(project=project, environment=production, flag=flag, at=at, units=3000,
             share_new=0.1, rng=rng)  # fmt: skip
    through = at + timedelta(minutes=1)
    assert release_analyze(release.pk, through=through, now=through).action == "advance"
    release.refresh_from_db()
    at = release.step_started_at + timedelta(seconds=5)
    simulate(project=project, environment=production, flag=flag, at=at, units=600,
             share_new=0.5, rng=rng, prefix="b")  # fmt: skip
    through = at + timedelta(minutes=1)
    assert release_analyze(release.pk, through=through, now=through).action == "hold"
    release.refresh_from_db()
    return release


def page_of(release) -> str:
    return f"/p/shop/releases/{release.pk}/"


# -- reading ------------------------------------------------------------------------------------


def test_every_member_reads_the_list_filtered_by_environment_and_status(viewer, release):
    response = viewer.get("/p/shop/releases/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="tab-production"' in html and 'class="active" id="tab-production"' in html
    assert f'data-release="{release.pk}"' in html
    assert "new-checkout" in html and "status-running" in html and "step 1 of 3 · 10%" in html
    assert 'id="new-release"' not in html  # viewers start nothing
    staging = viewer.get("/p/shop/releases/?env=staging").content.decode()
    assert f'data-release="{release.pk}"' not in staging and 'id="no-releases"' in staging
    assert (
        f'data-release="{release.pk}"' in viewer.get("/p/shop/releases/?env=all").content.decode()
    )
    assert (
        f'data-release="{release.pk}"'
        in viewer.get("/p/shop/releases/?status=live").content.decode()
    )
    done = viewer.get("/p/shop/releases/?status=completed").content.decode()
    assert f'data-release="{release.pk}"' not in done


def test_bad_filters_are_a_400_naming_the_parameter(viewer, release):
    response = viewer.get("/p/shop/releases/?status=bogus")
    assert response.status_code == 400 and b"status" in response.content
    response = viewer.get("/p/shop/releases/?env=moon")
    assert response.status_code == 400 and b"env" in response.content


def test_editors_see_new_release_in_the_list_and_the_nav(editor, release):
    html = editor.get("/p/shop/releases/").content.decode()
    assert 'id="new-release"' in html and 'href="/p/shop/releases/"' in html
    assert 'id="nav-releases"' in html


def test_outsiders_get_404_on_every_page(outsider, release):
    for path in [
        "/p/shop/releases/",
        "/p/shop/releases/new/",
        page_of(release),
        page_of(release) + "data.json",
    ]:
        assert outsider.get(path).status_code == 404, path
    assert outsider.post(page_of(release) + "rollback/", {"confirmed": "yes"}).status_code == 404
    release.refresh_from_db()
    assert release.status == ReleaseStatus.RUNNING


def test_another_projects_release_is_404(admin, release, django_user_model):
    other_owner = django_user_model.objects.create_user("zed", "z@example.com", "pw-12345")
    project_create(slug="other", name="Other", owner=other_owner)
    assert admin.get(f"/p/other/releases/{release.pk}/").status_code == 404
    assert admin.get("/p/shop/releases/999999/").status_code == 404
    assert admin.get("/p/shop/releases/999999/data.json").status_code == 404


def test_the_release_page_shows_header_timeline_decision_charts_and_latest_check(viewer, checked):
    response = viewer.get(page_of(checked))
    assert response.status_code == 200
    html = response.content.decode()
    assert "New checkout" in html and "Production" in html and "status-running" in html
    assert "by alice" in html  # who started it
    steps = re.findall(r'<li class="step state-(\w+)" data-step="(\d)"', html)
    assert steps == [("done", "0"), ("current", "1"), ("pending", "2")]
    assert "advanced from 10% to 50%" in html and "by the monitor" in html
    assert re.search(r'<div class="step-when">started <time[^>]*>[^<]*</time> by alice', html)
    # the current decision: holding, and what it waits for (30 minutes at 50%)
    assert "Holding at 50%" in html and "Waiting for:" in html and "more minutes at 50%" in html
    for key in ("error-rate", "latency-p95"):
        assert f'data-chart="metric" data-metric="{key}"' in html
    assert 'data-chart="units"' in html
    assert "Latency p95" in html and 'id="latest-table"' in html
    # the charts' data rides in a JSON script block (no inline code: the CSP)
    data = json.loads(re.search(
        r'<script id="release-data" type="application/json">(.*?)</script>', html, re.S
    ).group(1))  # fmt: skip
    assert len(data["checks"]) == 2 and [c["step"] for c in data["checks"]] == [0, 1]
    # the words the refresh puts in place are the page's own (written once, in the selectors)
    assert f'<small id="latest-when">{data["latest_when"]}</small>' in html
    assert f'<p class="help" id="decision-when">{data["decision"]["when"]}</p>' in html
    assert "<script>" not in html
    # viewers see no buttons
    assert 'id="action-rollback"' not in html


def test_the_page_data_json_has_checks_steps_metrics_and_the_decision(viewer, checked):
    response = viewer.get(page_of(checked) + "data.json")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    data = response.json()
    assert data["release"]["status"] == "running" and data["release"]["live"] is True
    assert data["release"]["step"] == 1 and data["release"]["percent"] == 50
    assert data["release"]["transitions"] == 3  # created, started, advanced
    assert [s["state"] for s in data["steps"]] == ["done", "current", "pending"]
    assert data["steps"][1]["started_at"] and data["steps"][0]["ended_at"]
    metrics = {m["key"]: m for m in data["metrics"]}
    assert metrics["latency-p95"]["quantile_label"] == "p95"
    assert (
        metrics["error-rate"]["margin"] == 0.1 and metrics["error-rate"]["direction"] == "decrease"
    )
    first = data["checks"][0]
    row = first["metrics"]["error-rate"]
    for name in ("baseline", "new", "difference", "lower", "upper", "tolerated", "harmed"):
        assert name in row
    assert first["units"]["new"] > 0 and first["action"] == "advance"
    assert data["decision"]["action"] == "hold" and data["decision"]["waits_for"]
    assert data["decision"]["when"].startswith("Last analysed with data through 20")
    assert "UTC. Next analysis about " in data["decision"]["when"]
    assert data["latest_when"].startswith("step 2 at 50%, data through ")
    assert " new vs " in data["latest_when"] and data["latest_when"].endswith("baseline units")


def test_the_flag_page_lists_its_releases_and_links_a_prefilled_form(admin, release):
    html = admin.get("/p/shop/flags/new-checkout/?env=production").content.decode()
    assert 'id="releases"' in html and f'data-release="{release.pk}"' in html
    assert "/p/shop/releases/new/?flag=new-checkout&amp;environment=production" in html


# -- the new-release form -----------------------------------------------------------------------


def form_post(**overrides) -> dict:
    data = {
        "flag": "new-checkout",
        "environment": "production",
        "variation": "on",
        "baseline_variation": "",
        "kind": "canary",
        "auto_rollback": "on",
        "alpha": "0.05",
        "analysis_interval_seconds": "",
        "start_at": "",
        "description": "ship it",
        "steps-TOTAL_FORMS": "2",
        "steps-INITIAL_FORMS": "2",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
        "steps-0-percent": "5",
        "steps-0-min_minutes": "10",
        "steps-0-min_units": "100",
        "steps-1-percent": "100",
        "steps-1-min_minutes": "0",
        "steps-1-min_units": "0",
        "metrics-TOTAL_FORMS": "2",
        "metrics-INITIAL_FORMS": "1",
        "metrics-MIN_NUM_FORMS": "0",
        "metrics-MAX_NUM_FORMS": "1000",
        "metrics-0-metric": "error-rate",
        "metrics-0-role": "guardrail",
        "metrics-0-non_inferiority_margin": "0.05",
        "metrics-1-metric": "latency-p95",
        "metrics-1-role": "primary",
        "metrics-1-non_inferiority_margin": "",
    }
    data.update(overrides)
    return data


def test_the_form_is_prefilled_from_the_flag_page(admin, flag, health_metrics):
    response = admin.get("/p/shop/releases/new/?flag=new-checkout&environment=production")
    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r'<option value="new-checkout" selected>', html)
    assert re.search(r'<option value="production" selected>', html)
    assert "the environment&#x27;s default (off)" in html
    rows = html.split('<template id="steps-template">')[0].count('class="formset-row step-row')
    assert rows == len(DEFAULT_CANARY_STEPS)
    assert 'value="25.0"' in html or 'value="25"' in html
    assert "p95 of latency_ms" in html  # quantile metrics show their quantile
    assert 'id="release-form-data" type="application/json"' in html
    assert re.search(r'name="auto_rollback"[^>]*checked', html)


def test_the_form_starts_a_release(admin, flag, health_metrics, admin_user):
    response = admin.post("/p/shop/releases/new/", form_post())
    release = Release.objects.get()
    assert response.status_code == 302 and response["Location"] == page_of(release)
    assert release.status == ReleaseStatus.RUNNING and release.created_by == admin_user
    assert (release.variation, release.baseline_variation) == ("on", "off")
    assert [s["percent"] for s in release.steps] == [5, 100]
    assert release.auto_rollback and release.alpha == 0.05 and release.description == "ship it"
    metrics = [(m.metric.key, m.role, m.non_inferiority_margin) for m in release.metrics.all()]
    assert metrics == [("error-rate", "guardrail", 0.05), ("latency-p95", "primary", None)]
    followed = admin.get(response["Location"]).content.decode()
    assert "started at 5%" in followed


def test_a_scheduled_start_schedules_the_release(admin, flag, health_metrics):
    response = admin.post("/p/shop/releases/new/", form_post(start_at="2999-01-01T10:00"))
    assert response.status_code == 302
    release = Release.objects.get()
    assert release.status == ReleaseStatus.SCHEDULED and release.start_at.year == 2999


@pytest.mark.parametrize(
    ("overrides", "field_id", "text"),
    [
        ({"steps-1-percent": "4"}, "steps-1-percent", "Steps must increase"),
        ({"baseline_variation": "on"}, "variation", "must differ from the baseline"),
        ({"alpha": "0.5"}, "alpha", "alpha is from"),
        ({"analysis_interval_seconds": "99999"}, "analysis_interval_seconds", "from"),
        ({"metrics-0-non_inferiority_margin": "3"}, "metrics-0-non_inferiority_margin", "0 to 1"),
        ({"kind": "blue_green"}, "steps", "blue-green release is one step at 100%"),
    ],
)
def test_the_services_refusal_lands_on_its_field(
    admin, flag, health_metrics, overrides, field_id, text
):
    response = admin.post("/p/shop/releases/new/", form_post(**overrides))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="form-errors"' in html and text in html
    assert not Release.objects.exists()
    if field_id == "steps":
        block = html.split('id="steps-errors"')[1].split("</div>")[0]
    elif field_id.startswith(("steps-", "metrics-")):
        block = html.split(f'name="{field_id}"')[1].split("</td>")[0]
    else:
        block = html.split(f'id="field-{field_id}"')[1].split("</div>")[0]
    assert text in block, block


def test_a_flag_off_in_the_environment_is_refused_on_the_environment(
    admin, project, flag, health_metrics
):
    response = admin.post("/p/shop/releases/new/", form_post(environment="staging"))
    html = response.content.decode()
    assert response.status_code == 200 and "is off in staging" in html
    assert "is off in staging" in html.split('id="field-environment"')[1].split("</div>")[0]


def test_production_releases_need_an_admin(editor, project, flag, health_metrics, admin_user):
    response = editor.post("/p/shop/releases/new/", form_post())
    assert response.status_code == 403
    assert b"need an admin" in response.content and not Release.objects.exists()
    # in staging an editor may
    staging = Environment.objects.get(project=project, key="staging")
    flag_environment_update(
        flag=flag, environment=staging, actor=admin_user, enabled=True, default_variation="off"
    )
    response = editor.post("/p/shop/releases/new/", form_post(environment="staging"))
    assert response.status_code == 302 and Release.objects.get().environment == staging


def test_viewers_cannot_open_the_form(viewer, flag):
    assert viewer.get("/p/shop/releases/new/").status_code == 403
    assert viewer.post("/p/shop/releases/new/", form_post()).status_code == 403
    assert not Release.objects.exists()


def test_bad_form_input_never_500s(admin, flag, health_metrics):
    for overrides in (
        {"flag": "nope"},
        {"variation": "maybe"},
        {"steps-0-percent": "lots"},
        {"steps-TOTAL_FORMS": "x"},
        {"start_at": "yesterday"},
        {"metrics-0-metric": "nope"},
        {"description": "x\x00"},
        {"alpha": "NaN"},
        {"alpha": "1e308"},
        {"steps-0-percent": "1e308"},
        {"steps-0-min_units": str(2**63)},
        {"steps-0-min_minutes": "-1"},
        {"analysis_interval_seconds": str(2**63)},
        {"environment": "a\x00b"},
    ):
        response = admin.post("/p/shop/releases/new/", form_post(**overrides))
        assert response.status_code in (200, 400), overrides
    assert not Release.objects.exists()
    response = admin.post("/p/shop/releases/new/", form_post(start_at="0001-01-01T00:00"))
    assert response.status_code == 302  # a start in the past starts now
    assert Release.objects.get().status == ReleaseStatus.RUNNING


def test_extreme_path_and_query_values_are_never_a_500(admin, release):
    for path in [
        f"/p/shop/releases/{2**63}/",
        f"/p/shop/releases/{2**63}/data.json",
        "/p/shop/releases/99999999999999999999999/",
        "/p/shop/releases/?page=-1",
        "/p/shop/releases/?page=99999999999999999999",
        "/p/shop/releases/?status=a%00b",
        "/p/shop/releases/new/?flag=a%00b&environment=9999-12-31&kind=NaN",
    ]:
        assert admin.get(path).status_code in (200, 400, 404), path
    response = admin.post(f"/p/shop/releases/{2**63}/rollback/", {"confirmed": "yes"})
    assert response.status_code == 404


def test_the_form_lists_only_this_projects_flags(admin, flag, django_user_model):
    owner = django_user_model.objects.create_user("zed", "z@example.com", "pw-12345")
    other = project_create(slug="other", name="Other", owner=owner)
    flag_create(project=other, key="secret-flag", name="Secret", actor=owner)
    html = admin.get("/p/shop/releases/new/").content.decode()
    assert "secret-flag" not in html and "new-checkout" in html


# -- actions ------------------------------------------------------------------------------------


def test_actions_ask_for_confirmation_first(admin, release):
    response = admin.post(page_of(release) + "pause/", {"reason": "look at logs"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="release-confirm"' in html and 'value="look at logs"' in html
    assert 'name="confirmed" value="yes"' in html
    release.refresh_from_db()
    assert release.status == ReleaseStatus.RUNNING


def test_pause_resume_advance_and_roll_back_move_the_release(admin, release):
    def act(action: str, reason: str = "") -> None:
        response = admin.post(
            page_of(release) + f"{action}/", {"confirmed": "yes", "reason": reason}
        )
        assert response.status_code == 302 and response["Location"] == page_of(release)
        release.refresh_from_db()

    act("pause", "look at logs")
    assert release.status == ReleaseStatus.PAUSED
    last = release.transitions.last()
    assert last.reason == "look at logs" and last.actor_label == "alice"
    html = admin.get(page_of(release)).content.decode()
    assert 'id="action-resume"' in html and 'id="action-pause"' not in html
    assert "paused" in html and "look at logs" in html
    act("resume")
    assert release.status == ReleaseStatus.RUNNING
    act("advance")
    assert release.status == ReleaseStatus.RUNNING and release.step == 1
    act("rollback", "enough")
    assert release.status == ReleaseStatus.ROLLED_BACK
    html = admin.get(page_of(release)).content.decode()
    assert "Rolled back" in html and 'id="actions"' not in html and "enough" in html
    assert 'data-live="0"' in html


def test_an_action_the_status_forbids_is_a_message_not_a_500(admin, release):
    response = admin.post(page_of(release) + "resume/", {"confirmed": "yes"}, follow=True)
    assert response.status_code == 200
    assert b"cannot resume" in response.content
    release.refresh_from_db()
    assert release.status == ReleaseStatus.RUNNING


def test_viewers_and_production_editors_cannot_act(viewer, editor, release):
    html = viewer.get(page_of(release)).content.decode()
    assert 'id="actions"' not in html
    assert viewer.post(page_of(release) + "rollback/", {"confirmed": "yes"}).status_code == 403
    html = editor.get(page_of(release)).content.decode()
    assert 'id="action-rollback"' not in html and "moved by project admins" in html
    response = editor.post(page_of(release) + "rollback/", {"confirmed": "yes"})
    assert response.status_code == 403 and b"need an admin" in response.content
    release.refresh_from_db()
    assert release.status == ReleaseStatus.RUNNING


def test_actions_are_post_only_and_unknown_actions_404(admin, release):
    assert admin.get(page_of(release) + "rollback/").status_code == 405
    assert admin.post(page_of(release) + "explode/", {"confirmed": "yes"}).status_code == 404
    release.refresh_from_db()
    assert release.status == ReleaseStatus.RUNNING
