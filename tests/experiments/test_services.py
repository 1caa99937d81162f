"""Lifecycle and validation rules of experiment definitions, metrics, members and API keys."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.errors import DomainError
from experiments.models import (
    ApiKey,
    AuditLog,
    Experiment,
    ExperimentStatus,
    Membership,
    Role,
)
from experiments.selectors import experiment_spec
from experiments.services import (
    api_key_create,
    api_key_revoke,
    experiment_conclude,
    experiment_create,
    experiment_delete,
    experiment_pause,
    experiment_ramp,
    experiment_resume,
    experiment_rollback,
    experiment_start,
    experiment_update,
    hash_api_secret,
    membership_add,
    membership_remove,
    membership_set,
    metric_create,
    metric_delete,
    metric_update,
)
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db


def two_variants(w1: float = 0.5, w2: float = 0.5, **extra):
    return [
        {"key": "control", "weight": w1, "is_control": True},
        {"key": "treatment", "weight": w2, **extra},
    ]


# --- create: shape and rules ------------------------------------------------------------------


def test_create_rejects_weights_not_summing_to_one(project, metrics):
    payload = experiment_payload(variants=two_variants(0.5, 0.6))
    with pytest.raises(DomainError, match="sum to 1") as exc:
        experiment_create(project=project, **payload)
    assert exc.value.field == "variants"


def test_create_requires_exactly_one_control(project, metrics):
    payload = experiment_payload(
        variants=[{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}]
    )
    with pytest.raises(DomainError, match="Exactly one variant"):
        experiment_create(project=project, **payload)
    payload["variants"] = [
        {"key": "a", "weight": 0.5, "is_control": True},
        {"key": "b", "weight": 0.5, "is_control": True},
    ]
    with pytest.raises(DomainError, match=r"found 2"):
        experiment_create(project=project, **payload)


def test_create_requires_two_variants_with_unique_keys(project, metrics):
    one = [{"key": "control", "weight": 1.0, "is_control": True}]
    with pytest.raises(DomainError, match="at least two variants"):
        experiment_create(project=project, **experiment_payload(variants=one))
    same = [
        {"key": "a", "weight": 0.5, "is_control": True},
        {"key": "a", "weight": 0.5},
    ]
    with pytest.raises(DomainError, match="unique"):
        experiment_create(project=project, **experiment_payload(variants=same))


def test_create_rejects_negative_weight(project, metrics):
    with pytest.raises(DomainError, match="between 0 and 1"):
        experiment_create(project=project, **experiment_payload(variants=two_variants(1.5, -0.5)))


def test_key_is_unique_per_project(project, metrics, django_user_model):
    experiment_create(project=project, **experiment_payload())
    with pytest.raises(DomainError, match="already exists") as exc:
        experiment_create(project=project, **experiment_payload())
    assert exc.value.field == "key"


def test_same_key_is_fine_in_another_project(project, metrics, admin_user):
    from experiments.services import project_create

    other = project_create(slug="other", name="Other", owner=admin_user)
    metric_create(project=other, key="purchase", name="P", event_name="purchase")
    experiment_create(project=project, **experiment_payload())
    experiment_create(project=other, **experiment_payload())
    assert Experiment.objects.filter(key="checkout-v2").count() == 2


def test_key_is_immutable(project, metrics):
    experiment = experiment_create(project=project, **experiment_payload())
    with pytest.raises(DomainError, match="key cannot change"):
        experiment_update(experiment=experiment, key="renamed")


def test_invalid_targeting_is_refused_naming_the_field(project, metrics):
    payload = experiment_payload(targeting={"country": {"$inn": ["US"]}})
    with pytest.raises(DomainError) as exc:
        experiment_create(project=project, **payload)
    assert exc.value.field == "targeting" and "$inn" in exc.value.message


def test_valid_targeting_is_stored(project, metrics):
    condition = {"country": {"$in": ["US", "CA"]}, "age": {"$gt": 18}}
    experiment = experiment_create(project=project, **experiment_payload(targeting=condition))
    assert experiment.targeting == condition


@pytest.mark.parametrize(("start", "end"), [(0.5, 0.5), (0.6, 0.4), (-0.1, 0.5), (0.0, 1.5)])
def test_layer_range_must_be_ordered_inside_zero_one(project, metrics, start, end):
    payload = experiment_payload(layer="checkout", layer_start=start, layer_end=end)
    with pytest.raises(DomainError, match="layer range") as exc:
        experiment_create(project=project, **payload)
    assert exc.value.field == "layer"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("coverage", 1.5),
        ("coverage", -0.1),
        ("alpha", 0.0),
        ("alpha", 0.5),
        ("mde", -0.05),
        ("mde", 10.01),
        ("planned_sample_size", 1_000_000_001),
    ],
)
def test_ranges_are_checked_with_the_field_named(project, metrics, field, value):
    with pytest.raises(DomainError) as exc:
        experiment_create(project=project, **experiment_payload(**{field: value}))
    assert exc.value.field == field


def test_empty_hash_attribute_is_refused(project, metrics):
    with pytest.raises(DomainError, match="identifies a unit"):
        experiment_create(project=project, **experiment_payload(hash_attribute=" "))


def test_unknown_metric_and_duplicate_metric_are_refused(project, metrics):
    with pytest.raises(DomainError, match="Unknown metric 'nope'"):
        experiment_create(project=project, **experiment_payload(metrics=[{"metric": "nope"}]))
    twice = [{"metric": "purchase"}, {"metric": "purchase", "role": "secondary"}]
    with pytest.raises(DomainError, match="listed twice"):
        experiment_create(project=project, **experiment_payload(metrics=twice))


def test_a_metric_entry_without_its_key_is_refused_naming_metrics(project, metrics):
    """The rule the API serializer used to hold alone: the service now checks it too."""
    with pytest.raises(DomainError, match="Metric 1 needs its metric key") as exc:
        experiment_create(project=project, **experiment_payload(metrics=[{"role": "primary"}]))
    assert exc.value.field == "metrics"


def test_guardrail_margin_defaults_to_zero_and_must_be_in_range(project, metrics):
    ms = [{"metric": "purchase"}, {"metric": "revenue", "role": "guardrail"}]
    experiment = experiment_create(project=project, **experiment_payload(metrics=ms))
    guardrail = experiment.experiment_metrics.get(role="guardrail")
    assert guardrail.non_inferiority_margin == 0.0
    bad = [
        {"metric": "purchase"},
        {"metric": "revenue", "role": "guardrail", "non_inferiority_margin": 1.5},
    ]
    with pytest.raises(DomainError, match="margin"):
        experiment_create(project=project, **experiment_payload("other", metrics=bad))


def test_ramp_plan_must_increase(project, metrics):
    stages = [{"coverage": 0.2, "min_hours": 1}, {"coverage": 0.1, "min_hours": 1}]
    with pytest.raises(DomainError, match="increase coverage") as exc:
        experiment_create(project=project, **experiment_payload(ramp_stages=stages))
    assert exc.value.field == "ramp_stages"


def test_owner_defaults_to_actor_and_must_be_a_member(
    project, metrics, admin_user, django_user_model
):
    experiment = experiment_create(project=project, actor=admin_user, **experiment_payload())
    assert experiment.owner == admin_user
    stranger = django_user_model.objects.create_user("stranger", "s@example.com", "pw-123456")
    with pytest.raises(DomainError, match="member") as exc:
        experiment_update(experiment=experiment, owner=stranger)
    assert exc.value.field == "owner"


def test_created_definition_is_servable(project, metrics):
    experiment = experiment_create(
        project=project,
        **experiment_payload(layer="l1", layer_start=0.0, layer_end=0.5, coverage=0.3),
    )
    spec = experiment_spec(experiment)
    assert spec.namespace == ("l1", 0.0, 0.5) and len(spec.variants) == 2


# --- lifecycle -----------------------------------------------------------------------------


def test_lifecycle_start_pause_resume_ramp_conclude_is_audited(project, metrics, admin_user):
    experiment = experiment_create(project=project, **experiment_payload(coverage=0.2))
    experiment = experiment_start(experiment=experiment, actor=admin_user)
    assert experiment.status == ExperimentStatus.RUNNING and experiment.started_at
    experiment = experiment_pause(experiment=experiment, actor=admin_user)
    experiment = experiment_resume(experiment=experiment, actor=admin_user)
    experiment = experiment_ramp(experiment=experiment, coverage=0.5, actor=admin_user)
    assert experiment.coverage == 0.5
    experiment = experiment_conclude(experiment=experiment, decision="treatment", actor=admin_user)
    assert experiment.status == ExperimentStatus.CONCLUDED
    assert experiment.decision_variant == "treatment" and experiment.ended_at
    logs = {log.action: log for log in AuditLog.objects.filter(experiment=experiment)}
    assert {
        "experiment.create",
        "experiment.start",
        "experiment.pause",
        "experiment.resume",
        "experiment.ramp",
        "experiment.conclude",
    } <= set(logs)
    ramp = logs["experiment.ramp"]
    assert ramp.actor == admin_user and ramp.actor_label == "alice"
    assert ramp.before["coverage"] == 0.2 and ramp.after["coverage"] == 0.5
    assert logs["experiment.conclude"].after["decision"] == "ship treatment"


def test_start_requires_a_primary_metric(project, metrics):
    experiment = experiment_create(project=project, **experiment_payload(metrics=[]))
    with pytest.raises(DomainError, match="at least one metric"):
        experiment_start(experiment=experiment)
    experiment_update(experiment=experiment, metrics=[{"metric": "purchase", "role": "secondary"}])
    with pytest.raises(DomainError, match="primary"):
        experiment_start(experiment=experiment)


@pytest.mark.parametrize(
    ("action", "status", "message"),
    [
        (experiment_pause, ExperimentStatus.DRAFT, "Cannot pause an experiment that is draft"),
        (experiment_resume, ExperimentStatus.RUNNING, "Cannot resume"),
        (experiment_start, ExperimentStatus.RUNNING, "Cannot start"),
        (experiment_rollback, ExperimentStatus.DRAFT, "Cannot rollback"),
    ],
)
def test_transitions_only_from_allowed_states(project, metrics, action, status, message):
    experiment = experiment_create(project=project, **experiment_payload())
    if status == ExperimentStatus.RUNNING:
        experiment = experiment_start(experiment=experiment)
    with pytest.raises(DomainError, match=message) as exc:
        action(experiment=experiment)
    assert exc.value.field == "status"


def test_conclude_needs_a_variant_key_and_can_keep_control(project, metrics):
    experiment = running_experiment(project)
    with pytest.raises(DomainError, match="choose 'control' to keep the control"):
        experiment_conclude(experiment=experiment, decision="shipit")
    experiment = experiment_conclude(experiment=experiment, decision="control")
    log = AuditLog.objects.get(experiment=experiment, action="experiment.conclude")
    assert log.after["decision"] == "keep control"


def test_rollback_is_terminal_and_records_the_reason(project, metrics):
    experiment = experiment_rollback(experiment=running_experiment(project), reason="guardrail")
    assert experiment.status == ExperimentStatus.ROLLED_BACK
    log = AuditLog.objects.get(experiment=experiment, action="experiment.rollback")
    assert log.actor_label == "system" and log.after["reason"] == "guardrail"
    with pytest.raises(DomainError, match="Cannot resume"):
        experiment_resume(experiment=experiment)
    with pytest.raises(DomainError, match="cannot be edited"):
        experiment_update(experiment=experiment, name="Again")


# --- what a live experiment freezes ------------------------------------------------------------


def test_running_experiment_freezes_variants_weights_and_seed(project, metrics):
    experiment = running_experiment(project)
    with pytest.raises(DomainError, match="frozen"):
        experiment_update(experiment=experiment, variants=two_variants(0.3, 0.7))
    with pytest.raises(DomainError, match="frozen"):
        experiment_update(experiment=experiment, seed="another")


def test_running_experiment_freezes_variant_values_but_not_names(project, metrics):
    experiment = running_experiment(project)
    changed = [
        {"key": "control", "weight": 0.5, "is_control": True, "value": {"v": 1}},
        {"key": "treatment", "weight": 0.5, "value": {"v": 3}},
    ]
    with pytest.raises(DomainError, match="frozen"):
        experiment_update(experiment=experiment, variants=changed)
    renamed = [
        {
            "key": "control",
            "name": "Old flow",
            "weight": 0.5,
            "is_control": True,
            "value": {"v": 1},
        },
        {"key": "treatment", "name": "New flow", "weight": 0.5, "value": {"v": 2}},
    ]
    experiment_update(experiment=experiment, variants=renamed)
    assert experiment.variants.get(key="treatment").name == "New flow"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hash_attribute", "device_id"),
        ("alpha", 0.1),
        ("planned_sample_size", 50_000),
        ("layer", "checkout"),
        ("decision_policy", "do_no_harm"),
    ],
)
def test_running_experiment_freezes_bucketing_and_design(project, metrics, field, value):
    experiment = running_experiment(project)
    with pytest.raises(DomainError, match="frozen once the experiment has started") as exc:
        experiment_update(experiment=experiment, **{field: value})
    assert exc.value.field == field


def test_unchanged_frozen_values_may_be_resubmitted(project, metrics):
    experiment = running_experiment(project)
    experiment = experiment_update(
        experiment=experiment, alpha=experiment.alpha, seed=experiment.seed, name="Renamed"
    )
    assert experiment.name == "Renamed"


def test_coverage_may_only_go_up_while_running(project, metrics):
    experiment = running_experiment(project, coverage=0.5)
    with pytest.raises(DomainError, match="only go up"):
        experiment_ramp(experiment=experiment, coverage=0.2)
    with pytest.raises(DomainError, match="only go up"):
        experiment_update(experiment=experiment, coverage=0.2)
    with pytest.raises(DomainError, match="already 0.5"):
        experiment_ramp(experiment=experiment, coverage=0.5)


def test_ramp_only_while_live(project, metrics):
    experiment = experiment_create(project=project, **experiment_payload())
    with pytest.raises(DomainError, match="Cannot ramp"):
        experiment_ramp(experiment=experiment, coverage=0.5)


def test_targeting_change_while_running_starts_a_new_phase(project, metrics):
    experiment = running_experiment(project)
    experiment = experiment_update(experiment=experiment, targeting={"country": "US"})
    assert experiment.phase == 1 and experiment.phase_started_at is not None


def test_primary_metrics_and_guardrails_are_frozen_while_live(project, metrics):
    experiment = running_experiment(project)
    with pytest.raises(DomainError, match="primary metric of a live experiment"):
        experiment_update(experiment=experiment, metrics=[{"metric": "revenue"}])
    with pytest.raises(DomainError, match="cannot be added to a live experiment"):
        experiment_update(
            experiment=experiment,
            metrics=[{"metric": "purchase"}, {"metric": "revenue", "role": "primary"}],
        )
    experiment = experiment_update(
        experiment=experiment,
        metrics=[
            {"metric": "purchase", "role": "primary"},
            {"metric": "revenue", "role": "guardrail", "non_inferiority_margin": 0.05},
        ],
    )
    assert experiment.experiment_metrics.count() == 2
    with pytest.raises(DomainError, match="guardrail metric of a live experiment"):
        experiment_update(
            experiment=experiment,
            metrics=[
                {"metric": "purchase", "role": "primary"},
                {"metric": "revenue", "role": "guardrail", "non_inferiority_margin": 0.2},
            ],
        )


def test_secondary_metrics_may_be_added_while_live(project, metrics):
    experiment = running_experiment(project)
    experiment_update(
        experiment=experiment,
        metrics=[{"metric": "purchase"}, {"metric": "revenue", "role": "secondary"}],
    )
    assert experiment.experiment_metrics.filter(role="secondary").count() == 1


def test_only_drafts_can_be_deleted_and_the_deletion_is_audited(project, metrics):
    draft = experiment_create(project=project, **experiment_payload("draft-one"))
    experiment_delete(experiment=draft)
    assert not Experiment.objects.filter(key="draft-one").exists()
    assert AuditLog.objects.filter(action="experiment.delete", target="draft-one").exists()
    with pytest.raises(DomainError, match="Only a draft"):
        experiment_delete(experiment=running_experiment(project))


def test_update_audit_has_before_and_after(project, metrics, admin_user):
    experiment = experiment_create(project=project, **experiment_payload())
    experiment_update(experiment=experiment, actor=admin_user, name="Checkout v3", coverage=0.4)
    log = AuditLog.objects.filter(experiment=experiment, action="experiment.update").get()
    assert log.before["name"] == "Checkout v2" and log.after["name"] == "Checkout v3"
    assert log.before["coverage"] == 1.0 and log.after["coverage"] == 0.4
    assert log.actor_label == "alice"


# --- ramp plans ------------------------------------------------------------------------------


def test_ramp_plan_starts_at_its_first_stage_and_waits_for_each_stage(project, metrics):
    stages = [{"coverage": 0.05, "min_hours": 24}, {"coverage": 0.2, "min_hours": 24}]
    experiment = running_experiment(project, ramp_stages=stages)
    assert experiment.coverage == 0.05 and experiment.ramp_stage_index == 0
    with pytest.raises(DomainError, match="must run for at least 24 h"):
        experiment_ramp(experiment=experiment, coverage=0.2)
    Experiment.objects.filter(pk=experiment.pk).update(
        ramp_stage_started_at=timezone.now() - timedelta(hours=25)
    )
    experiment = experiment_ramp(experiment=experiment, coverage=0.2)
    assert experiment.coverage == 0.2 and experiment.ramp_stage_index == 1
    assert experiment.ramp_stage_started_at > timezone.now() - timedelta(minutes=1)


# --- metrics ------------------------------------------------------------------------------


def test_metric_in_use_cannot_be_deleted(project, metrics):
    running_experiment(project)
    with pytest.raises(DomainError, match="used by"):
        metric_delete(metric=metrics[0])


def test_unused_metric_can_be_deleted(project, metrics):
    metric_delete(metric=metrics[1])
    assert AuditLog.objects.filter(action="metric.delete", target="revenue").exists()


def test_metric_key_is_unique_and_immutable(project, metrics):
    with pytest.raises(DomainError, match="already exists"):
        metric_create(project=project, key="purchase", name="Again", event_name="buy")
    with pytest.raises(DomainError, match="cannot change"):
        metric_update(metric=metrics[0], key="buy")


def test_ratio_metric_needs_a_denominator(project):
    with pytest.raises(DomainError, match="denominator") as exc:
        metric_create(project=project, key="aov", name="AOV", kind="ratio", event_name="rev")
    assert exc.value.field == "denominator_event"


def test_metric_used_by_a_live_experiment_keeps_its_definition(project, metrics):
    running_experiment(project)
    with pytest.raises(DomainError, match="used by live experiment"):
        metric_update(metric=metrics[0], event_name="checkout")
    metric = metric_update(metric=metrics[0], name="Purchase conversion")
    assert metric.name == "Purchase conversion"


# --- members and API keys ----------------------------------------------------------------------


def test_last_admin_cannot_be_demoted_or_removed(project, admin_user, make_member):
    with pytest.raises(DomainError, match="only admin"):
        membership_set(project=project, user=admin_user, role=Role.EDITOR)
    with pytest.raises(DomainError, match="only admin"):
        membership_remove(project=project, user=admin_user)
    bob = make_member("bob", Role.ADMIN)
    membership_set(project=project, user=admin_user, role=Role.EDITOR)
    membership_remove(project=project, user=admin_user, actor=bob)
    assert not Membership.objects.filter(project=project, user=admin_user).exists()
    with pytest.raises(DomainError, match="only admin"):
        membership_remove(project=project, user=bob)


def test_membership_add_creates_a_login_only_with_a_password(project, admin_user):
    with pytest.raises(DomainError, match="Give a password"):
        membership_add(project=project, username="carol", role=Role.EDITOR)
    with pytest.raises(DomainError) as exc:
        membership_add(project=project, username="carol", role=Role.EDITOR, password="short")
    assert exc.value.field == "password"
    membership = membership_add(
        project=project, username="carol", role=Role.EDITOR, password="a-long-password-1"
    )
    assert membership.user.check_password("a-long-password-1")
    log = AuditLog.objects.get(action="member.set", target="carol")
    assert log.after == {"role": "editor"}


def test_api_key_secret_is_stored_hashed_and_revocable(project, admin_user):
    created = api_key_create(project=project, name="checkout", scopes=["assign"], actor=admin_user)
    stored = ApiKey.objects.get(pk=created.api_key.pk)
    assert created.secret not in (stored.hashed_secret, stored.prefix, stored.name)
    assert stored.hashed_secret == hash_api_secret(created.secret)
    api_key_revoke(api_key=stored, actor=admin_user)
    assert ApiKey.objects.get(pk=stored.pk).revoked_at is not None
    with pytest.raises(DomainError, match="Scopes"):
        api_key_create(project=project, name="x", scopes=["admin"])
    with pytest.raises(DomainError, match="name"):
        api_key_create(project=project, name=" ", scopes=["read"])


@pytest.mark.parametrize("hours", [0, 8761, 2_000_000_000, 1.5])
def test_metric_conversion_window_must_be_1_to_8760_hours(project, hours):
    with pytest.raises(DomainError, match="from 1 to 8760") as exc:
        metric_create(
            project=project, key="m", name="M", event_name="e", conversion_window_hours=hours
        )
    assert exc.value.field == "conversion_window_hours"


def test_ramp_stage_hours_beyond_a_year_are_refused_and_a_year_is_accepted(project, metrics):
    stages = [{"coverage": 0.5, "min_hours": 8761}]
    with pytest.raises(DomainError, match="min_hours") as exc:
        experiment_create(project=project, **experiment_payload(ramp_stages=stages))
    assert exc.value.field == "ramp_stages"
    # The limits themselves stay valid.
    metric_create(project=project, key="m", name="M", event_name="e", conversion_window_hours=8760)
    experiment = experiment_create(
        project=project,
        **experiment_payload(
            planned_sample_size=1_000_000_000,
            mde=10.0,
            ramp_stages=[{"coverage": 0.5, "min_hours": 8760}, {"coverage": 1.0}],
        ),
    )
    assert experiment.planned_sample_size == 1_000_000_000 and experiment.mde == 10.0
