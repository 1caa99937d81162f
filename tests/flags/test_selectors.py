"""Flag reads: an environment's served specs (resolved, cached by a version that changes on
every kind of change), the flag list filters, segment usage and stale flags."""

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.services import experiment_create
from flags.models import FlagEnvironment, FlagUsage
from flags.selectors import environment_flags, flag_list, segment_usage, stale_flags
from flags.services import (
    environment_create,
    flag_create,
    flag_delete,
    flag_environment_update,
    flag_toggle,
    flag_update,
    segment_create,
    segment_update,
)
from tests.factories import experiment_payload

pytestmark = pytest.mark.django_db


def test_specs_are_resolved_and_only_served_flags_listed(project, flag, envs):
    segment_create(project=project, key="staff", name="Staff", include=["u1", "u2"])
    flag_environment_update(
        flag=flag,
        environment=envs["staging"],
        enabled=True,
        rules=[
            {"id": "s", "type": "force", "segment": "staff", "variation": "on"},
            {"id": "r", "type": "rollout", "weights": {"on": 0.25, "off": 0.75}},
        ],
    )
    archived = flag_create(project=project, key="old", name="Old")
    flag_update(flag=archived, archived=True)
    served = environment_flags(envs["staging"])
    spec = served.specs["new-checkout"]
    assert spec.enabled and spec.seed == flag.seed and spec.default_variation == "off"
    assert spec.rules[0].segment.include == ("u1", "u2")
    assert spec.rules[1].weights == (("on", 0.25), ("off", 0.75))
    assert "old" not in served.specs and "old" in served.archived
    assert served.flag_ids == {"new-checkout": flag.pk, "old": archived.pk}
    assert served.variations["new-checkout"] == ("on", "off")
    assert not environment_flags(envs["production"]).specs["new-checkout"].enabled


def test_experiment_rules_carry_the_experiment_spec(project, flag, envs, metrics):
    payload = experiment_payload("exp-b")
    payload["variants"] = [
        {"key": "off", "weight": 0.5, "is_control": True},
        {"key": "on", "weight": 0.5},
    ]
    experiment_create(project=project, **payload)
    flag_environment_update(
        flag=flag,
        environment=envs["production"],
        rules=[{"type": "experiment", "experiment": "exp-b"}],
    )
    rule = environment_flags(envs["production"]).specs["new-checkout"].rules[0]
    assert rule.experiment.key == "exp-b" and [v.key for v in rule.experiment.variants] == [
        "off",
        "on",
    ]


def test_a_flag_that_cannot_be_served_is_left_out_not_the_others(project, flag, envs):
    other = flag_create(project=project, key="other", name="Other")
    FlagEnvironment.objects.filter(flag=other).update(default_variation="gone")
    served = environment_flags(envs["staging"])
    assert "other" in served.broken and "other" not in served.specs
    assert "new-checkout" in served.specs


def test_the_version_changes_on_every_kind_of_change(project, flag, envs, metrics, admin_user):
    staging = envs["staging"]
    seen = [environment_flags(staging).version]

    def changed():
        version = environment_flags(staging).version
        assert version != seen[-1]  # (a flag created then deleted is the state before: equal)
        seen.append(version)

    assert environment_flags(staging) is environment_flags(staging)  # cached
    flag_toggle(flag=flag, environment=staging, enabled=True)
    changed()
    flag_environment_update(flag=flag, environment=staging, default_variation="on")
    changed()
    flag_update(flag=flag, name="Renamed")
    changed()
    segment = segment_create(project=project, key="nl", name="NL", condition={"country": "NL"})
    changed()
    segment_update(segment=segment, include=["u1"])
    changed()
    experiment_create(project=project, **experiment_payload("exp-x"))
    changed()
    second = flag_create(project=project, key="second", name="Second")
    changed()
    flag_update(flag=second, archived=True)
    changed()
    flag_delete(flag=second)
    changed()
    environment_create(project=project, key="qa", name="QA", actor=admin_user)
    assert environment_flags(staging).version == seen[-1]  # another environment: same
    flag_toggle(flag=flag, environment=envs["production"], enabled=True)
    changed()  # the flag's updated_at moves with any environment's change


def test_flag_list_filters(project, flag, admin_user, editor):
    flag_create(project=project, key="dark-mode", name="Dark mode", tags=["ui"], owner=editor)
    assert [f.key for f in flag_list(project, q="dark")] == ["dark-mode"]
    assert [f.key for f in flag_list(project, tag="ui")] == ["dark-mode"]
    assert [f.key for f in flag_list(project, owner="alice")] == ["new-checkout"]
    flag_update(flag=flag, archived=True)
    assert [f.key for f in flag_list(project)] == ["dark-mode"]
    assert [f.key for f in flag_list(project, archived=True)] == ["new-checkout"]


def test_segment_usage_lists_flags_per_environment_and_experiments(project, flag, envs, metrics):
    segment_create(project=project, key="nl", name="NL", condition={"country": "NL"})
    segment_create(project=project, key="unused", name="Unused", include=["u1"])
    for env in ("staging", "development"):
        flag_environment_update(
            flag=flag,
            environment=envs[env],
            rules=[{"type": "force", "segment": "nl", "variation": "on"}],
        )
    experiment = experiment_create(project=project, **experiment_payload("exp-s"))
    experiment.segment = project.segments.get(key="nl")
    experiment.save()
    assert segment_usage(project) == {
        "nl": ["experiment:exp-s", "flag:new-checkout@development", "flag:new-checkout@staging"],
        "unused": [],
    }


def _age(flag, days):
    past = timezone.now() - timedelta(days=days)
    type(flag).objects.filter(pk=flag.pk).update(updated_at=past)
    FlagEnvironment.objects.filter(flag=flag).update(updated_at=past)


def test_stale_flags_serve_one_variation_everywhere_for_n_days(project, flag, envs, settings):
    settings.ABACUS_STALE_FLAG_DAYS = 14
    for env in envs.values():
        flag_environment_update(
            flag=flag, environment=env, enabled=True, rules=[{"type": "force", "variation": "on"}]
        )
    assert stale_flags(project) == []  # changed just now
    _age(flag, 15)
    (stale,) = stale_flags(project)
    assert stale.flag == flag and stale.variation == "on" and "14 days" in stale.reason
    assert stale_flags(project, days=30) == []
    permanent = flag_create(project=project, key="perm", name="Perm", temporary=False)
    _age(permanent, 30)
    assert [s.flag.key for s in stale_flags(project)] == ["new-checkout"]


def test_a_rollout_or_condition_is_not_stale_unless_usage_shows_one_variation(project, flag, envs):
    flag_environment_update(
        flag=flag,
        environment=envs["production"],
        enabled=True,
        rules=[{"type": "rollout", "weights": {"on": 0.5, "off": 0.5}}],
    )
    _age(flag, 20)
    assert stale_flags(project) == []
    today = timezone.now()
    FlagUsage.objects.create(
        flag=flag,
        environment=envs["production"],
        variation="on",
        day=today.date(),
        count=9,
        last_at=today,
    )
    (stale,) = stale_flags(project)
    assert stale.variation == "on" and "evaluation" in stale.reason
    FlagUsage.objects.create(
        flag=flag,
        environment=envs["staging"],
        variation="off",
        day=today.date(),
        count=1,
        last_at=today,
    )
    assert stale_flags(project) == []


def test_an_experiments_segment_is_anded_with_its_targeting(project, metrics):
    from experiments.selectors import experiment_spec

    segment = segment_create(project=project, key="beta", name="Beta", include=["u1"])
    experiment = experiment_create(
        project=project, **experiment_payload("exp-seg", targeting={"country": "NL"})
    )
    assert experiment_spec(experiment).condition == {"country": "NL"}
    experiment.segment = segment
    experiment.save()
    assert experiment_spec(experiment).condition == {
        "$and": [{"country": "NL"}, {"id": {"$in": ["u1"]}}]
    }
    experiment.targeting = {}
    assert experiment_spec(experiment).condition == {"id": {"$in": ["u1"]}}
