"""Flag services: validation of every field (a DomainError naming it), the roles and the
production rule (admins; change requests when the project requires approval; the kill switch),
segments, environments and the audit log."""

import pytest
from django.core.exceptions import PermissionDenied

from core.errors import DomainError
from experiments.models import AuditLog
from experiments.services import experiment_create
from flags.models import ChangeRequest, ChangeRequestStatus, FlagEnvironment
from flags.services import (
    change_request_cancel,
    change_request_review,
    environment_create,
    flag_create,
    flag_delete,
    flag_environment_update,
    flag_toggle,
    flag_update,
    segment_create,
    segment_delete,
    segment_update,
)
from tests.factories import experiment_payload

pytestmark = pytest.mark.django_db


def field_of(call, **kwargs):
    with pytest.raises(DomainError) as exc:
        call(**kwargs)
    return exc.value.field


# --- definitions ------------------------------------------------------------------------------


def test_create_makes_one_disabled_config_per_environment(project, flag, envs):
    configs = FlagEnvironment.objects.filter(flag=flag)
    assert {c.environment.key for c in configs} == set(envs)
    assert all(not c.enabled and c.default_variation == "off" for c in configs)
    assert flag.variations == [{"key": "on", "value": True}, {"key": "off", "value": False}]
    assert flag.off_variation == "off"
    assert AuditLog.objects.filter(action="flag.create", target="flag:new-checkout").exists()


def test_create_takes_the_default_variation_for_every_environment(project):
    flag = flag_create(project=project, key="f", name="F", default_variation="on")
    assert set(flag.configs.values_list("default_variation", flat=True)) == {"on"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"key": "has space"}, "key"),
        ({"key": ""}, "key"),
        ({"name": "  "}, "name"),
        ({"type": "float"}, "type"),
        ({"variations": [{"key": "a", "value": True}]}, "variations"),
        (
            {"variations": [{"key": "a", "value": True}, {"key": "a", "value": False}]},
            "variations[1].key",
        ),
        (
            {"variations": [{"key": "a b", "value": True}, {"key": "c", "value": False}]},
            "variations[0].key",
        ),
        (
            {"variations": [{"key": "a", "value": 1}, {"key": "b", "value": False}]},
            "variations[0].value",
        ),
        (
            {"variations": [{"key": "a", "value": True}, {"key": "b", "value": True}]},
            "variations[1].value",
        ),
        (
            {
                "type": "number",
                "variations": [{"key": "a", "value": 1}, {"key": "b", "value": "2"}],
            },
            "variations[1].value",
        ),
        (
            {
                "type": "number",
                "variations": [{"key": "a", "value": 1}, {"key": "b", "value": 1.0}],
            },
            "variations[1].value",
        ),
        (
            {
                "type": "string",
                "variations": [{"key": "a", "value": "x"}, {"key": "b", "value": 3}],
            },
            "variations[1].value",
        ),
        (
            {
                "type": "json",
                "variations": [{"key": "a", "value": {"x": 1}}, {"key": "b", "value": None}],
            },
            "variations[1].value",
        ),
        ({"off_variation": "nope"}, "off_variation"),
        ({"default_variation": "nope"}, "default_variation"),
        ({"tags": "beta"}, "tags"),
        ({"tags": ["x" * 51]}, "tags"),
        ({"prerequisites": [{"flag": "missing", "variations": ["on"]}]}, "prerequisites[0].flag"),
        (
            {"prerequisites": [{"flag": "base", "variations": ["maybe"]}]},
            "prerequisites[0].variations",
        ),
        ({"prerequisites": [{"flag": "base", "variations": []}]}, "prerequisites[0].variations"),
        ({"prerequisites": [{"flag": "f", "variations": ["on"]}]}, "prerequisites[0].flag"),
    ],
)
def test_create_refuses_bad_fields_naming_them(project, overrides, field):
    flag_create(project=project, key="base", name="Base")
    kwargs = {"project": project, "key": "f", "name": "F", **overrides}
    assert field_of(flag_create, **kwargs) == field


def test_typed_flags_accept_their_own_values(project):
    flag_create(
        project=project,
        key="n",
        name="N",
        type="number",
        variations=[{"key": "low", "value": 1}, {"key": "high", "value": 2.5}],
    )
    flag_create(
        project=project,
        key="j",
        name="J",
        type="json",
        variations=[{"key": "a", "value": {"x": 1}}, {"key": "b", "value": [1]}],
    )
    flag = flag_create(
        project=project,
        key="s",
        name="S",
        type="string",
        variations=[{"key": "a", "value": "blue"}, {"key": "b", "value": "red"}],
    )
    assert flag.off_variation == "a"


def test_flag_and_experiment_keys_are_one_key_space(project, metrics):
    experiment_create(project=project, **experiment_payload("checkout-v2"))
    assert field_of(flag_create, project=project, key="checkout-v2", name="X") == "key"
    flag_create(project=project, key="taken", name="T")
    with pytest.raises(DomainError) as exc:
        experiment_create(project=project, **experiment_payload("taken"))
    assert exc.value.field == "key"


def test_prerequisite_cycles_are_refused_however_long(project):
    flag_create(project=project, key="a", name="A")
    flag_create(
        project=project, key="b", name="B", prerequisites=[{"flag": "a", "variations": ["on"]}]
    )
    c = flag_create(
        project=project, key="c", name="C", prerequisites=[{"flag": "b", "variations": ["on"]}]
    )
    a = c.project.flags.get(key="a")
    with pytest.raises(DomainError) as exc:
        flag_update(flag=a, prerequisites=[{"flag": "c", "variations": ["on"]}])
    assert exc.value.field == "prerequisites[0].flag" and "cycle" in exc.value.message


def test_prerequisites_that_would_make_sdks_evaluate_too_many_flags_are_refused(project):
    """Each flag needing the two before it: an SDK evaluates a shared parent again on every
    path (Fibonacci of the depth). The flag that would cross the bound is refused, naming the
    count; so is a change to a parent that would push a flag needing it over the bound."""
    from flags.services.rules import MAX_SDK_EVALUATIONS

    def needs(*keys):
        return [{"flag": k, "variations": ["on"]} for k in keys]

    flag_create(project=project, key="f0", name="f0")
    flag_create(project=project, key="f1", name="f1")
    i, evaluations = 2, [1, 1]
    while True:
        evaluations.append(1 + evaluations[-1] + evaluations[-2])
        if evaluations[-1] > MAX_SDK_EVALUATIONS:
            break
        flag_create(
            project=project,
            key=f"f{i}",
            name=f"f{i}",
            prerequisites=needs(f"f{i - 1}", f"f{i - 2}"),
        )
        i += 1
    with pytest.raises(DomainError) as exc:
        flag_create(
            project=project, key=f"f{i}", name="x", prerequisites=needs(f"f{i - 1}", f"f{i - 2}")
        )
    assert exc.value.field == "prerequisites"
    assert f"{evaluations[-1]:,} flags" in exc.value.message
    # A parent gaining a prerequisite raises the cost of every flag below it.
    flag_create(project=project, key="extra", name="extra")
    flag_create(project=project, key="extra2", name="extra2")
    top = f"f{i - 1}"
    f1 = project.flags.get(key="f1")
    flag_update(flag=f1, prerequisites=needs("extra"))  # f1 costs 2: the top stays within
    with pytest.raises(DomainError) as exc:
        flag_update(flag=f1, prerequisites=needs("extra", "extra2"))  # 3: every path pays it
    assert f"'{top}'" in exc.value.message
    # A chain of the same length costs one evaluation per flag: accepted.
    flag_create(project=project, key="c0", name="c0")
    for j in range(1, 40):
        flag_create(project=project, key=f"c{j}", name=f"c{j}", prerequisites=needs(f"c{j - 1}"))


def test_update_refuses_removing_a_variation_in_use(project, flag, envs):
    flag_environment_update(flag=flag, environment=envs["staging"], default_variation="on")
    with pytest.raises(DomainError) as exc:
        flag_update(
            flag=flag, variations=[{"key": "yes", "value": True}, {"key": "off", "value": False}]
        )
    assert exc.value.field == "variations" and "staging" in exc.value.message


def test_key_cannot_change_and_archived_flags_only_are_deleted(project, flag, envs):
    assert field_of(flag_update, flag=flag, key="other") == "key"
    assert field_of(flag_delete, flag=flag) == "archived"
    flag_toggle(flag=flag, environment=envs["production"], enabled=True)
    assert field_of(flag_update, flag=flag, archived=True) == "archived"
    flag_toggle(flag=flag, environment=envs["production"], enabled=False)
    flag_update(flag=flag, archived=True)
    flag_delete(flag=flag)
    assert not project.flags.exists()


# --- rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ("x", "rules"),
        ([{"type": "magic"}], "rules[0].type"),
        ([{"type": "force", "variation": "maybe"}], "rules[0].variation"),
        ([{"type": "force", "variation": "on", "colour": 1}], "rules[0].colour"),
        (
            [{"type": "force", "variation": "on", "condition": {"country": {"$bad": 1}}}],
            "rules[0].condition",
        ),
        (
            [{"type": "force", "variation": "on", "condition": {"c": {"$regex": "(a"}}}],
            "rules[0].condition",
        ),
        ([{"type": "force", "variation": "on", "segment": "ghosts"}], "rules[0].segment"),
        (
            [
                {"type": "force", "variation": "on"},
                {"type": "rollout", "weights": {"on": 0.5, "off": 0.4}},
            ],
            "rules[1].weights",
        ),
        ([{"type": "rollout", "weights": {"on": -0.5, "off": 1.5}}], "rules[0].weights"),
        ([{"type": "rollout", "weights": {"maybe": 1}}], "rules[0].weights"),
        (
            [{"type": "rollout", "weights": {"on": 1}, "hash_attribute": "a b"}],
            "rules[0].hash_attribute",
        ),
        (
            [
                {"id": "x", "type": "force", "variation": "on"},
                {"id": "x", "type": "force", "variation": "off"},
            ],
            "rules[1].id",
        ),
        ([{"id": "not ok!", "type": "force", "variation": "on"}], "rules[0].id"),
        ([{"type": "experiment", "experiment": "checkout-v2"}], "rules[0].type"),  # staging
        ([{"type": "force", "variation": "on"}] * 101, "rules"),
    ],
)
def test_rules_are_validated_naming_the_field(project, flag, envs, rules, field):
    kwargs = {"flag": flag, "environment": envs["staging"], "rules": rules}
    assert field_of(flag_environment_update, **kwargs) == field


def test_rule_ids_are_generated_unique_and_kept(project, flag, envs):
    segment_create(project=project, key="staff", name="Staff", include=["u1"])
    config = flag_environment_update(
        flag=flag,
        environment=envs["staging"],
        rules=[
            {"type": "force", "segment": "staff", "variation": "on"},
            {"id": "ten", "type": "rollout", "weights": {"off": 0.9, "on": 0.1}},
        ],
    )
    ids = [r["id"] for r in config.rules]
    assert ids[1] == "ten" and ids[0] and ids[0] != "ten"
    assert list(config.rules[1]["weights"]) == ["on", "off"]  # the flag's variation order
    again = flag_environment_update(flag=flag, environment=envs["staging"], rules=config.rules)
    assert [r["id"] for r in again.rules] == ids


def test_experiment_rules_need_production_and_matching_variants(project, flag, envs, metrics):
    experiment_create(project=project, **experiment_payload("exp-a"))
    rules = [{"type": "experiment", "experiment": "exp-a"}]
    kwargs = {"flag": flag, "environment": envs["production"], "rules": rules}
    assert field_of(flag_environment_update, **kwargs) == "rules[0].experiment"
    payload = experiment_payload("exp-b")
    payload["variants"] = [
        {"key": "off", "weight": 0.5, "is_control": True},
        {"key": "on", "weight": 0.5},
    ]
    experiment_create(project=project, **payload)
    config = flag_environment_update(
        flag=flag,
        environment=envs["production"],
        rules=[{"type": "experiment", "experiment": "exp-b"}],
    )
    assert config.rules[0]["experiment"] == "exp-b"


# --- roles and production -----------------------------------------------------------------------


def test_viewers_change_nothing(project, flag, envs, viewer):
    with pytest.raises(PermissionDenied):
        flag_toggle(flag=flag, environment=envs["staging"], actor=viewer, enabled=True)
    with pytest.raises(PermissionDenied):
        flag_update(flag=flag, actor=viewer, name="x")
    with pytest.raises(PermissionDenied):
        flag_create(project=project, key="v", name="V", actor=viewer)


def test_editors_change_staging_and_definitions_but_not_production(flag, envs, editor):
    config = flag_toggle(flag=flag, environment=envs["staging"], actor=editor, enabled=True)
    assert config.enabled
    flag_update(flag=flag, actor=editor, name="Renamed", tags=["checkout"])
    for call in (
        lambda: flag_toggle(flag=flag, environment=envs["production"], actor=editor, enabled=True),
        lambda: flag_toggle(flag=flag, environment=envs["production"], actor=editor, enabled=False),
        lambda: flag_environment_update(
            flag=flag, environment=envs["production"], actor=editor, default_variation="on"
        ),
    ):
        with pytest.raises(PermissionDenied):
            call()
    assert not FlagEnvironment.objects.get(flag=flag, environment=envs["production"]).enabled


def test_admins_change_production_at_once_without_approval(flag, envs, admin_user):
    config = flag_toggle(flag=flag, environment=envs["production"], actor=admin_user, enabled=True)
    assert isinstance(config, FlagEnvironment) and config.enabled


@pytest.fixture
def approval(project):
    project.require_approval = True
    project.save()
    return project


def test_with_approval_production_changes_become_requests(
    approval, flag, envs, editor, admin_user, admin2
):
    request = flag_toggle(flag=flag, environment=envs["production"], actor=editor, enabled=True)
    assert isinstance(request, ChangeRequest) and request.status == ChangeRequestStatus.PENDING
    mine = flag_toggle(flag=flag, environment=envs["production"], actor=admin_user, enabled=True)
    assert isinstance(mine, ChangeRequest)  # admins too: another admin approves
    production = FlagEnvironment.objects.get(flag=flag, environment=envs["production"])
    assert not production.enabled
    # Staging is not production: applied at once.
    assert flag_toggle(flag=flag, environment=envs["staging"], actor=editor, enabled=True).enabled
    # Reviewers: an admin other than the requester.
    with pytest.raises(PermissionDenied):
        change_request_review(change_request=request, actor=editor, approve=True)
    with pytest.raises(PermissionDenied):
        change_request_review(change_request=mine, actor=admin_user, approve=True)
    reviewed = change_request_review(change_request=request, actor=admin_user, approve=True)
    assert reviewed.status == ChangeRequestStatus.APPLIED and reviewed.reviewed_by == admin_user
    production.refresh_from_db()
    assert production.enabled
    rejected = change_request_review(change_request=mine, actor=admin2, approve=False, comment="no")
    assert rejected.status == ChangeRequestStatus.REJECTED
    with pytest.raises(DomainError):
        change_request_review(change_request=mine, actor=admin2, approve=True)


def test_the_kill_switch_applies_at_once_for_admins(approval, flag, envs, admin_user, editor):
    production = FlagEnvironment.objects.get(flag=flag, environment=envs["production"])
    production.enabled = True
    production.save()
    result = flag_toggle(flag=flag, environment=envs["production"], actor=admin_user, enabled=False)
    assert isinstance(result, FlagEnvironment) and not result.enabled
    production.enabled = True
    production.save()
    # An editor's "off" still needs a review.
    assert isinstance(
        flag_toggle(flag=flag, environment=envs["production"], actor=editor, enabled=False),
        ChangeRequest,
    )


def test_approval_revalidates_and_failure_is_recorded(
    approval, project, flag, envs, editor, admin_user
):
    segment_create(project=project, key="staff", name="Staff", include=["u1"])
    request = flag_environment_update(
        flag=flag,
        environment=envs["production"],
        actor=editor,
        rules=[{"type": "force", "segment": "staff", "variation": "on"}],
    )
    segment_delete(segment=project.segments.get(key="staff"))  # not used yet: allowed
    reviewed = change_request_review(change_request=request, actor=admin_user, approve=True)
    assert reviewed.status == ChangeRequestStatus.FAILED
    assert "staff" in reviewed.review_comment
    assert FlagEnvironment.objects.get(flag=flag, environment=envs["production"]).rules == []


def test_requesters_and_admins_cancel(approval, flag, envs, editor, make_member):
    other = make_member("olga")
    request = flag_toggle(flag=flag, environment=envs["production"], actor=editor, enabled=True)
    with pytest.raises(PermissionDenied):
        change_request_cancel(change_request=request, actor=other)
    assert change_request_cancel(change_request=request, actor=editor).status == "cancelled"


# --- segments and environments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"key": "no way"}, "key"),
        ({"name": ""}, "name"),
        ({"condition": {"x": {"$nope": 1}}}, "condition"),
        ({"condition": "country = NL"}, "condition"),
        ({"include": "u1"}, "include"),
        ({"exclude": [""]}, "exclude"),
        ({"include": [{"id": 1}]}, "include"),
    ],
)
def test_segments_are_validated(project, overrides, field):
    kwargs = {"project": project, "key": "beta", "name": "Beta", **overrides}
    assert field_of(segment_create, **kwargs) == field


def test_segments_in_use_are_not_deleted(project, flag, envs, metrics):
    segment = segment_create(
        project=project, key="nl", name="NL", condition={"country": "NL"}, exclude=["u9"]
    )
    flag_environment_update(
        flag=flag,
        environment=envs["staging"],
        rules=[{"type": "force", "segment": "nl", "variation": "on"}],
    )
    with pytest.raises(DomainError) as exc:
        segment_delete(segment=segment)
    assert "flag:new-checkout@staging" in exc.value.message
    segment_update(segment=segment, include=["u1"])
    assert AuditLog.objects.filter(action="segment.update", target="segment:nl").exists()


def test_a_segment_used_in_production_is_changed_by_admins_only(
    project, flag, envs, editor, admin_user
):
    segment = segment_create(project=project, key="nl", name="NL", condition={"country": "NL"})
    flag_environment_update(
        flag=flag,
        environment=envs["staging"],
        rules=[{"type": "force", "segment": "nl", "variation": "on"}],
    )
    segment_update(segment=segment, include=["u1"], actor=editor)  # staging only: editors may
    flag_environment_update(
        flag=flag,
        environment=envs["production"],
        rules=[{"type": "force", "segment": "nl", "variation": "on"}],
    )
    with pytest.raises(PermissionDenied) as exc:
        segment_update(segment=segment, include=["u2"], actor=editor)
    assert "flag:new-checkout@production" in str(exc.value)
    segment.refresh_from_db()
    assert segment.include == ["u1"]
    segment_update(segment=segment, include=["u2"], actor=admin_user)
    segment.refresh_from_db()
    assert segment.include == ["u2"]


def test_new_environments_get_a_config_of_every_flag(project, flag, admin_user, editor):
    with pytest.raises(PermissionDenied):
        environment_create(project=project, key="qa", name="QA", actor=editor)
    env = environment_create(project=project, key="qa", name="QA", actor=admin_user)
    assert not env.production and env.client_key != project.client_key
    config = FlagEnvironment.objects.get(flag=flag, environment=env)
    assert not config.enabled and config.default_variation == "off"
    assert field_of(environment_create, project=project, key="qa", name="QA again") == "key"


def test_every_change_is_audited_with_before_and_after(flag, envs, admin_user):
    flag_toggle(flag=flag, environment=envs["staging"], actor=admin_user, enabled=True)
    log = AuditLog.objects.filter(action="flag.update", target="flag:new-checkout").first()
    assert log.before["enabled"] is False and log.after["enabled"] is True
    assert log.after["environment"] == "staging" and log.actor == admin_user
