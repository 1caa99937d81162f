"""Decisions on record: concluding against the latest recommendation needs a rationale, which
is stored, audited and shown; experiments carry tags."""

import pytest
from django.test import Client
from django.utils import timezone

from analysis.models import ResultSnapshot
from core.errors import DomainError
from experiments.models import AuditLog, ExperimentStatus
from experiments.services import experiment_conclude, experiment_create, experiment_update
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db


def recommend(experiment, recommendation, ship=""):
    now = timezone.now()
    return ResultSnapshot.objects.create(
        experiment=experiment,
        computed_at=now,
        data_through=now,
        method="sequential",
        recommendation=recommendation,
        ship_variant=ship,
    )


@pytest.mark.parametrize(
    ("recommendation", "ship", "decision"),
    [
        ("rollback", "", "treatment"),
        ("extend", "", "treatment"),
        ("keep", "treatment", "control"),
    ],
)
def test_against_the_recommendation_needs_a_rationale(
    project, metrics, recommendation, ship, decision
):
    experiment = running_experiment(project)
    recommend(experiment, recommendation, ship)
    with pytest.raises(DomainError, match="against the recommendation") as exc:
        experiment_conclude(experiment=experiment, decision=decision)
    assert exc.value.field == "rationale"
    with pytest.raises(DomainError):
        experiment_conclude(experiment=experiment, decision=decision, rationale="   ")
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING
    done = experiment_conclude(
        experiment=experiment, decision=decision, rationale=" Strategic: the new flow is needed. "
    )
    assert done.status == ExperimentStatus.CONCLUDED
    assert done.rationale == "Strategic: the new flow is needed."
    log = AuditLog.objects.get(experiment=experiment, action="experiment.conclude")
    assert log.after["rationale"] == "Strategic: the new flow is needed."
    assert log.after["recommendation"] == recommendation
    assert log.after["against_recommendation"] is True


@pytest.mark.parametrize(
    ("recommendation", "ship", "decision"),
    [
        (None, "", "treatment"),
        ("keep", "treatment", "treatment"),
        ("rollback", "", "control"),
        ("extend", "", "control"),
    ],
)
def test_following_the_recommendation_needs_no_rationale(
    project, metrics, recommendation, ship, decision
):
    experiment = running_experiment(project)
    if recommendation:
        recommend(experiment, recommendation, ship)
    done = experiment_conclude(experiment=experiment, decision=decision)
    assert done.status == ExperimentStatus.CONCLUDED and done.rationale == ""
    log = AuditLog.objects.get(experiment=experiment, action="experiment.conclude")
    assert "rationale" not in log.after and "against_recommendation" not in log.after


def test_the_latest_snapshot_decides(project, metrics):
    experiment = running_experiment(project)
    old = recommend(experiment, "rollback")
    ResultSnapshot.objects.filter(pk=old.pk).update(
        computed_at=timezone.now() - timezone.timedelta(days=1)
    )
    recommend(experiment, "keep", "treatment")
    experiment_conclude(experiment=experiment, decision="treatment")


def test_rationale_is_bounded(project, metrics):
    experiment = running_experiment(project)
    with pytest.raises(DomainError) as exc:
        experiment_conclude(experiment=experiment, decision="control", rationale="x" * 5001)
    assert exc.value.field == "rationale"


def test_api_conclude_against_the_recommendation_is_a_400_naming_rationale(api, project, metrics):
    experiment = running_experiment(project)
    recommend(experiment, "rollback")
    url = "/api/v1/projects/shop/experiments/checkout-v2/conclude"
    r = api.post(url, {"decision": "treatment"}, format="json")
    assert r.status_code == 400 and r.json()["field"] == "rationale"
    r = api.post(url, {"decision": "treatment", "rationale": "x" * 5001}, format="json")
    assert r.status_code == 400 and "rationale" in r.json()
    r = api.post(url, {"decision": "treatment", "rationale": "Legal requires it."}, format="json")
    assert r.status_code == 200
    assert r.json()["rationale"] == "Legal requires it." and r.json()["status"] == "concluded"


def test_tags_are_checked_and_stored(project, metrics):
    experiment = experiment_create(
        project=project, **experiment_payload(tags=[" checkout ", "pricing", "checkout"])
    )
    assert experiment.tags == ["checkout", "pricing"]
    for bad in ("checkout", ["x" * 51], [""], [1], ["t"] * 21):
        with pytest.raises(DomainError) as exc:
            experiment_update(experiment=experiment, tags=bad)
        assert exc.value.field == "tags"
    experiment_update(experiment=experiment, tags=["mobile"])
    experiment.refresh_from_db()
    assert experiment.tags == ["mobile"]


def test_api_tags(api, project, metrics):
    payload = experiment_payload(tags=["checkout"])
    r = api.post("/api/v1/projects/shop/experiments/", payload, format="json")
    assert r.status_code == 201 and r.json()["tags"] == ["checkout"]
    r = api.patch(
        "/api/v1/projects/shop/experiments/checkout-v2/", {"tags": ["x" * 51]}, format="json"
    )
    assert r.status_code == 400 and "tags" in r.json()
    r = api.patch("/api/v1/projects/shop/experiments/checkout-v2/", {"tags": "a"}, format="json")
    assert r.status_code == 400 and "tags" in r.json()


def test_conclude_page_asks_for_and_shows_the_rationale(project, metrics, admin_user):
    experiment = running_experiment(project)
    recommend(experiment, "rollback")
    client = Client()
    client.force_login(admin_user)
    page = client.get("/p/shop/experiments/checkout-v2/").content.decode()
    assert 'name="rationale"' in page
    url = "/p/shop/experiments/checkout-v2/conclude/"
    r = client.post(url, {"decision": "treatment"}, follow=True)
    assert "against the recommendation" in r.content.decode()
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING
    r = client.post(
        url, {"decision": "treatment", "rationale": "Ship for the launch <b>now</b>."}, follow=True
    )
    html = r.content.decode()
    assert 'id="rationale"' in html and "Ship for the launch &lt;b&gt;now&lt;/b&gt;." in html
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.CONCLUDED


def test_edit_form_takes_tags(project, metrics, admin_user):
    experiment_create(project=project, **experiment_payload(tags=["checkout"]))
    client = Client()
    client.force_login(admin_user)
    page = client.get("/p/shop/experiments/checkout-v2/edit/").content.decode()
    assert 'name="tags"' in page and 'value="checkout"' in page
