"""analysis/act.py notifies the project's channels and people (notifications.services.notify)
of the same four events it sends signed webhooks for: rollback, ramp, recommendation change and
a new sample-ratio mismatch; the signed webhooks are unchanged."""

# The fixtures (catalog, experiment) are those of test_services and test_ramps, imported; a test
# naming one as an argument is not a redefinition.
# ruff: noqa: F811

import json
from datetime import timedelta

import pytest

from analysis.models import WebhookDelivery
from analysis.services import analysis_run
from experiments.models import Project
from notifications.models import NotificationDelivery
from notifications.services import notification_channel_create
from tests.analysis.simulate import simulate
from tests.analysis.test_ramps import (
    age_stage,
    experiment,  # noqa: F401 - a fixture
    traffic,
)
from tests.analysis.test_services import (  # noqa: F401 - catalog is a fixture
    METRICS,
    SAME,
    _harmful,
    _live_run,
    catalog,
    start_experiment,
)

pytestmark = pytest.mark.django_db


def team(project, events=None):
    return notification_channel_create(
        project=project, kind="email", name="team", target="team@example.com", events=events
    )


def sent(event):
    return list(NotificationDelivery.objects.filter(event=event).order_by("id"))


def test_an_auto_rollback_notifies_with_the_reason_and_a_link_to_the_results(catalog):
    team(catalog)
    experiment = _harmful(catalog, auto_rollback=True, webhook_url="https://hooks.example.com/a")
    snapshot = analysis_run(experiment_id=experiment.pk)
    [rolled_back] = sent("experiment.rolled_back")
    assert rolled_back.title == "Experiment exp was rolled back"
    assert rolled_back.text == " ".join(snapshot.reasons)
    assert rolled_back.payload["link"] == "http://localhost:8000/p/shop/experiments/exp/results/"
    assert rolled_back.payload["data"]["experiment"] == "exp"
    assert rolled_back.payload["data"]["trigger"] == "auto_rollback"
    [action] = snapshot.actions
    assert action["notifications"] == [rolled_back.pk]
    # The signed webhook is still sent, as before.
    webhook = WebhookDelivery.objects.get(event="experiment.rolled_back")
    assert action["webhook_delivery"] == webhook.pk
    assert json.loads(webhook.body)["reason"] == rolled_back.text
    [changed] = sent("experiment.recommendation_changed")
    assert changed.title == "Experiment exp: the recommendation is now rollback"
    assert "from extend to rollback" in changed.text


def test_a_recommendation_change_notifies_once(catalog):
    team(catalog, events=["experiment.recommendation_changed"])
    experiment = _harmful(catalog, auto_rollback=False)
    start = experiment.phase_started_at
    _live_run(experiment, start + timedelta(days=1))
    _live_run(experiment, start + timedelta(days=1.5))
    assert len(sent("experiment.recommendation_changed")) == 1
    assert NotificationDelivery.objects.count() == 1  # the channel chose only this event


def test_a_new_sample_ratio_mismatch_notifies_once(catalog):
    team(catalog, events=["experiment.srm_detected"])
    experiment = start_experiment(catalog, metrics=METRICS[:1])
    start = experiment.phase_started_at
    balanced = {"control": 200, "treatment": 200}
    simulate(experiment, units=balanced, start=start, rates={"control": SAME, "treatment": SAME})
    _live_run(experiment, start + timedelta(hours=6))
    assert sent("experiment.srm_detected") == []
    simulate(
        experiment,
        units={"control": 300},
        start=start + timedelta(hours=7),
        rates={"control": SAME},
        prefix="late-",
    )
    _live_run(experiment, start + timedelta(hours=20))
    _live_run(experiment, start + timedelta(hours=30))
    [srm] = sent("experiment.srm_detected")
    assert srm.title == "Experiment exp: sample-ratio mismatch"
    assert "Sample-ratio mismatch" in srm.text
    assert srm.payload["data"]["units_by_variant"] == {"control": 500, "treatment": 200}


def test_a_ramp_step_notifies(experiment):
    ramping = experiment  # a running experiment with a ramp plan at its first stage (10%)
    team(ramping.project, events=["experiment.ramped"])
    Project.objects.filter(pk=ramping.project_id).update(webhook_url="http://127.0.0.1:9/h")
    age_stage(ramping, hours=3)
    traffic(ramping)
    analysis_run(experiment_id=ramping.pk)
    [ramped] = sent("experiment.ramped")
    assert ramped.title == f"Experiment {ramping.name} ramped to 50%"
    assert "coverage 10% -> 50%" in ramped.text
    assert WebhookDelivery.objects.get().event == "experiment.ramped"


def test_backfills_notify_nobody(catalog):
    from analysis.services import analysis_backfill

    team(catalog)
    experiment = _harmful(catalog, auto_rollback=False)
    analysis_backfill(experiment_id=experiment.pk, every=timedelta(hours=12))
    assert not NotificationDelivery.objects.exists()
