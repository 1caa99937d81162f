"""The flag pages: every role sees them (viewers read-only), forms save through the services,
a service's refusal is shown next to its field or as a message (never a 500), production
asks first and may become a change request, the preview answers what evaluate_flags answers,
and other projects' objects are 404."""

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from bucketing.flags import evaluate_flags
from experiments.models import AuditLog, Role, Segment
from experiments.services import project_create
from flags.models import ChangeRequest, ChangeRequestStatus, Flag, FlagEnvironment, FlagUsage
from flags.selectors import environment_flags
from flags.services import flag_create, flag_environment_update, segment_create

pytestmark = pytest.mark.django_db

FLAGS = "/p/shop/flags/"


def client_for(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.fixture
def admin(admin_user) -> Client:
    return client_for(admin_user)


@pytest.fixture
def beta(project, admin_user):
    return segment_create(
        project=project,
        key="beta",
        name="Beta testers",
        actor=admin_user,
        condition={"plan": "beta"},
        include=["u-1"],
    )


def rules_post(rules: list[dict[str, Any]], default: str = "off", comment: str = "") -> dict:
    """The rules editor's POST: one formset row per rule (w0, w1: percentages of on, off)."""
    data: dict[str, Any] = {
        "rules-TOTAL_FORMS": str(len(rules)),
        "rules-INITIAL_FORMS": "0",
        "rules-MIN_NUM_FORMS": "0",
        "rules-MAX_NUM_FORMS": "1000",
        "default_variation": default,
        "comment": comment,
    }
    for i, rule in enumerate(rules):
        data[f"rules-{i}-ORDER"] = str(i + 1)
        data[f"rules-{i}-hash_attribute"] = "id"
        for name, value in rule.items():
            data[f"rules-{i}-{name}"] = value
    return data


def flag_post(**overrides: Any) -> dict[str, Any]:
    data = {
        "key": "dark-mode",
        "name": "Dark mode",
        "description": "",
        "type": "boolean",
        "off_variation": "off",
        "tags": "ui, q3",
        "owner": "",
        "temporary": "on",
        "prerequisites": "",
        "variations-TOTAL_FORMS": "2",
        "variations-INITIAL_FORMS": "0",
        "variations-MIN_NUM_FORMS": "0",
        "variations-MAX_NUM_FORMS": "1000",
        "variations-0-key": "on",
        "variations-0-value": "true",
        "variations-1-key": "off",
        "variations-1-value": "false",
    }
    data.update(overrides)
    return data


# --- access ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.EDITOR, Role.ANALYST, Role.VIEWER])
def test_every_member_reads_every_page(role, make_member, flag, beta):
    client = client_for(make_member(f"m-{role}", role))
    pages = [
        FLAGS,
        f"{FLAGS}new-checkout/",
        f"{FLAGS}new-checkout/?env=production",
        "/p/shop/segments/",
        "/p/shop/segments/beta/",
        "/p/shop/change-requests/",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
    page = client.get(FLAGS).content.decode()
    writer = role in (Role.ADMIN, Role.EDITOR)
    assert ('id="new-flag"' in page) is writer
    # Viewers and analysts see the toggles disabled.
    assert ('id="toggle-new-checkout-staging"' in page) and (" disabled" in page) is not writer


def test_viewers_may_not_open_forms_nor_toggle(viewer, flag):
    client = client_for(viewer)
    assert client.get(f"{FLAGS}new/").status_code == 403
    assert client.get(f"{FLAGS}new-checkout/environments/staging/rules/").status_code == 403
    response = client.post(f"{FLAGS}new-checkout/environments/staging/toggle/", {"enabled": "on"})
    assert response.status_code == 403
    assert not FlagEnvironment.objects.get(flag=flag, environment__key="staging").enabled


def test_other_projects_and_unknown_objects_are_404(django_user_model, admin, flag):
    stranger = django_user_model.objects.create_user("sam", "s@example.com", "pw")
    other = project_create(slug="other", name="Other", owner=stranger)
    flag_create(project=other, key="theirs", name="Theirs", actor=stranger)
    assert admin.get("/p/other/flags/").status_code == 404
    assert admin.get(f"{FLAGS}theirs/").status_code == 404
    assert admin.get(f"{FLAGS}nope/").status_code == 404
    assert admin.get(f"{FLAGS}new-checkout/environments/nope/rules/").status_code == 404
    assert admin.get("/p/shop/segments/nope/").status_code == 404
    assert admin.post("/p/shop/change-requests/999/approve/").status_code == 404


# --- the list ---------------------------------------------------------------------------------


def test_list_searches_by_text_tag_and_owner_and_hides_archived(project, admin, admin_user, editor):
    flag_create(project=project, key="dark-mode", name="Dark mode", tags=["ui"], actor=editor)
    flag_create(project=project, key="fast-cart", name="Fast cart", tags=["cart"], actor=admin_user)
    old = flag_create(project=project, key="old-thing", name="Old", actor=admin_user)
    Flag.objects.filter(pk=old.pk).update(archived=True)

    def keys(query: str) -> list[str]:
        response = admin.get(FLAGS + query)
        return [row.flag.key for row in response.context["rows"]]

    assert keys("") == ["dark-mode", "fast-cart"]
    assert keys("?q=cart") == ["fast-cart"]
    assert keys("?tag=ui") == ["dark-mode"]
    assert keys("?owner=eddie") == ["dark-mode"]
    assert keys("?archived=1") == ["old-thing"]


def test_list_shows_last_evaluated_and_stale_flags(project, admin, flag, envs):
    at = timezone.now() - timedelta(hours=2)
    FlagUsage.objects.create(
        flag=flag,
        environment=envs["production"],
        variation="off",
        day=at.date(),
        count=9,
        last_at=at,
    )
    row = admin.get(FLAGS).context["rows"][0]
    assert row.last_evaluated == at
    assert "Every evaluation" in row.stale  # one variation only in the window
    assert "badge stale" in admin.get(FLAGS).content.decode()


# --- toggles ------------------------------------------------------------------------------------


def test_staging_toggles_at_once(admin, flag):
    response = admin.post(
        f"{FLAGS}new-checkout/environments/staging/toggle/", {"enabled": "on", "next": FLAGS}
    )
    assert response.status_code == 302 and response["Location"] == FLAGS
    assert FlagEnvironment.objects.get(flag=flag, environment__key="staging").enabled


def test_production_asks_before_it_toggles(admin, flag):
    url = f"{FLAGS}new-checkout/environments/production/toggle/"
    asked = admin.post(url, {"enabled": "on"})
    assert asked.status_code == 200 and b'id="confirm-toggle"' in asked.content
    production = FlagEnvironment.objects.get(flag=flag, environment__key="production")
    assert not production.enabled
    admin.post(url, {"enabled": "on", "confirmed": "yes"})
    production.refresh_from_db()
    assert production.enabled
    entry = AuditLog.objects.filter(target="flag:new-checkout").order_by("-id").first()
    assert entry.before["enabled"] is False and entry.after["enabled"] is True


def test_editors_are_told_why_production_is_refused(editor, flag):
    client = client_for(editor)
    response = client.post(
        f"{FLAGS}new-checkout/environments/production/toggle/",
        {"enabled": "on", "confirmed": "yes"},
        follow=True,
    )
    assert response.status_code == 200
    assert "admin" in " ".join(str(m) for m in response.context["messages"])
    assert not FlagEnvironment.objects.get(flag=flag, environment__key="production").enabled


def test_with_approval_a_production_change_becomes_a_request(project, editor, admin2, flag):
    project.require_approval = True
    project.save()
    response = client_for(editor).post(
        f"{FLAGS}new-checkout/environments/production/toggle/",
        {"enabled": "on", "confirmed": "yes"},
        follow=True,
    )
    request = ChangeRequest.objects.get()
    assert f"Change request #{request.pk} created" in response.content.decode()
    page = client_for(editor).get("/p/shop/change-requests/").content.decode()
    assert f'id="cr-{request.pk}"' in page and f'id="approve-{request.pk}"' not in page
    reviewer = client_for(admin2)
    assert f'id="approve-{request.pk}"' in reviewer.get("/p/shop/change-requests/").content.decode()
    reviewer.post(f"/p/shop/change-requests/{request.pk}/approve/", {"comment": "ok"})
    request.refresh_from_db()
    assert request.status == ChangeRequestStatus.APPLIED and request.reviewed_by == admin2
    assert FlagEnvironment.objects.get(flag=flag, environment__key="production").enabled


def test_requesters_cannot_approve_their_own_request(project, admin, admin_user, flag, envs):
    project.require_approval = True
    project.save()
    request = flag_environment_update(
        flag=flag, environment=envs["production"], actor=admin_user, default_variation="on"
    )
    assert isinstance(request, ChangeRequest)
    response = admin.post(f"/p/shop/change-requests/{request.pk}/approve/", follow=True)
    assert "Another admin" in response.content.decode()
    request.refresh_from_db()
    assert request.status == ChangeRequestStatus.PENDING
    admin.post(f"/p/shop/change-requests/{request.pk}/cancel/")
    request.refresh_from_db()
    assert request.status == ChangeRequestStatus.CANCELLED


def test_settings_page_turns_approval_on(project, admin):
    response = admin.post(
        "/p/shop/settings/project/",
        {"name": "Shop", "webhook_url": "", "require_approval": "on"},
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.require_approval
    entry = AuditLog.objects.filter(action="project.update").latest("id")
    assert entry.after["require_approval"] is True


# --- the flag form ------------------------------------------------------------------------------


def test_create_a_flag_with_typed_values_tags_and_prerequisites(admin, admin_user, flag):
    response = admin.post(
        f"{FLAGS}new/",
        flag_post(
            key="cart-limit",
            name="Cart limit",
            type="number",
            off_variation="low",
            **{
                "variations-0-key": "low",
                "variations-0-value": "10",
                "variations-1-key": "high",
                "variations-1-value": "12.5",
            },
            prerequisites="new-checkout: on",
            owner="alice",
        ),
    )
    assert response.status_code == 302 and response["Location"] == f"{FLAGS}cart-limit/"
    created = Flag.objects.get(key="cart-limit")
    assert created.variations == [{"key": "low", "value": 10}, {"key": "high", "value": 12.5}]
    assert created.tags == ["ui", "q3"] and created.owner == admin_user
    assert created.prerequisites == [{"flag": "new-checkout", "variations": ["on"]}]


def test_form_errors_are_shown_with_their_field(admin, flag):
    bad_value = admin.post(FLAGS + "new/", flag_post(**{"variations-0-value": "yes"}))
    assert bad_value.status_code == 200
    assert "true or false" in bad_value.content.decode()
    taken = admin.post(FLAGS + "new/", flag_post(key="new-checkout"))
    assert taken.context["editor"].form.errors["key"]
    bad_off = admin.post(FLAGS + "new/", flag_post(off_variation="nope"))
    assert "off_variation" in bad_off.context["editor"].form.errors
    assert not Flag.objects.filter(key="dark-mode").exists()


def test_edit_keeps_the_key_and_saves_through_the_service(admin, flag):
    response = admin.post(f"{FLAGS}new-checkout/edit/", flag_post(key="other", name="Renamed"))
    assert response.status_code == 302
    flag.refresh_from_db()
    assert flag.key == "new-checkout" and flag.name == "Renamed"


# --- rules --------------------------------------------------------------------------------------


def test_rules_editor_saves_a_segment_rule_and_a_rollout(admin, flag, beta):
    url = f"{FLAGS}new-checkout/environments/staging/rules/"
    assert admin.get(url).status_code == 200
    response = admin.post(
        url,
        rules_post(
            [
                {"type": "force", "segment": "beta", "condition": "", "variation": "on"},
                {
                    "type": "rollout",
                    "condition": '{"country": {"$in": ["US", "CA"]}}',
                    "w0": "10",
                    "w1": "90",
                },
            ]
        ),
    )
    assert response.status_code == 302
    config = FlagEnvironment.objects.get(flag=flag, environment__key="staging")
    force, rollout = config.rules
    assert force["segment"] == "beta" and force["variation"] == "on" and force["id"]
    assert rollout["weights"] == {"on": 0.1, "off": 0.9}
    assert rollout["condition"] == {"country": {"$in": ["US", "CA"]}}
    # Reordering: ORDER decides, ids stay.
    ids = [force["id"], rollout["id"]]
    admin.post(
        url,
        rules_post(
            [
                {"id": ids[0], "ORDER": "2", "type": "force", "segment": "beta", "variation": "on"},
                {"id": ids[1], "ORDER": "1", "type": "rollout", "w0": "20", "w1": "80"},
            ]
        ),
    )
    config.refresh_from_db()
    assert [r["id"] for r in config.rules] == ids[::-1]


def test_rule_errors_land_on_the_rule_and_field(admin, flag):
    url = f"{FLAGS}new-checkout/environments/staging/rules/"
    sums = admin.post(url, rules_post([{"type": "rollout", "w0": "10", "w1": "80"}]))
    assert "they must be 100%" in sums.content.decode()
    bad = admin.post(
        url,
        rules_post(
            [
                {"type": "force", "variation": "on"},
                {"type": "force", "condition": '{"age": {"$bogus": 1}}', "variation": "on"},
            ]
        ),
    )
    assert bad.status_code == 200
    second = bad.context["editor"].rules.forms[1]
    assert "condition" in second.errors
    broken = admin.post(url, rules_post([{"type": "force", "condition": "{not json"}]))
    assert "Not valid JSON" in broken.content.decode()
    assert FlagEnvironment.objects.get(flag=flag, environment__key="staging").rules == []


def test_editor_rules_in_production_are_refused_with_the_reason(editor, flag):
    response = client_for(editor).post(
        f"{FLAGS}new-checkout/environments/production/rules/",
        rules_post([{"type": "force", "variation": "on"}]),
    )
    assert response.status_code == 200
    assert "admin" in " ".join(response.context["editor"].refusals)


# --- the flag page: preview, schedules, usage, audit -------------------------------------------


def test_preview_answers_what_evaluate_flags_answers(project, admin, admin_user, flag, envs, beta):
    for env in ("staging", "production"):
        flag_environment_update(
            flag=flag,
            environment=envs[env],
            actor=admin_user,
            enabled=True,
            rules=[
                {"type": "force", "segment": "beta", "variation": "on"},
                {"type": "rollout", "weights": {"on": 0.1, "off": 0.9}},
            ],
        )
    for unit in ("u-1", "u-2", "u-3", "u-77"):
        response = admin.get(
            f"{FLAGS}new-checkout/", {"unit_id": unit, "attributes": '{"plan": "free"}'}
        )
        rows = {p.environment.key: p.result for p in response.context["previews"]}
        for env in ("staging", "production"):
            specs = environment_flags(envs[env]).specs
            expected = evaluate_flags(specs, {"plan": "free", "id": unit}, ["new-checkout"])
            assert rows[env] == expected["new-checkout"]
        assert rows["development"].reason == "off"
    assert rows["staging"].reason in ("rollout", "default")
    beta_unit = admin.get(f"{FLAGS}new-checkout/", {"unit_id": "u-1", "attributes": ""})
    result = beta_unit.context["previews"][1].result
    assert (result.variation, result.reason) == ("on", "rule")
    assert b'id="preview-results"' in beta_unit.content


def test_preview_refuses_attributes_that_are_no_object(admin, flag):
    response = admin.get(f"{FLAGS}new-checkout/", {"unit_id": "u", "attributes": "[1]"})
    assert response.status_code == 200 and response.context["previews"] is None
    assert "JSON object" in response.content.decode()


def test_schedule_a_change_and_cancel_it(admin, flag, envs):
    at = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    admin.post(
        f"{FLAGS}new-checkout/schedule/",
        {"environment": "staging", "at": at, "action": "enable", "note": "launch"},
    )
    scheduled = flag.scheduled_changes.get()
    assert scheduled.change == {"enabled": True} and scheduled.environment == envs["staging"]
    page = admin.get(f"{FLAGS}new-checkout/").content.decode()
    assert "launch" in page and "turn on" in page
    admin.post(f"{FLAGS}new-checkout/schedule/{scheduled.pk}/cancel/")
    scheduled.refresh_from_db()
    assert scheduled.status == "cancelled"
    missing = admin.post(
        f"{FLAGS}new-checkout/schedule/",
        {"environment": "staging", "at": at, "action": "rollout"},
        follow=True,
    )
    assert "Needed to move a rollout" in missing.content.decode()


def test_usage_counts_last_seven_days_per_environment_and_variation(admin, flag, envs):
    now = timezone.now()
    for days_ago, variation, count in [(0, "on", 5), (3, "on", 7), (2, "off", 4), (10, "on", 99)]:
        FlagUsage.objects.create(
            flag=flag,
            environment=envs["production"],
            variation=variation,
            day=(now - timedelta(days=days_ago)).date(),
            count=count,
            last_at=now - timedelta(days=days_ago),
        )
    usage = admin.get(f"{FLAGS}new-checkout/").context["usage"]
    assert [(r.environment.key, r.variation, r.count) for r in usage.rows] == [
        ("production", "off", 4),
        ("production", "on", 12),
    ]
    assert usage.last_evaluated == now


def test_audit_entries_of_the_flag_show_before_and_after(admin, admin_user, flag, envs):
    flag_environment_update(flag=flag, environment=envs["staging"], actor=admin_user, enabled=True)
    page = admin.get(f"{FLAGS}new-checkout/")
    actions = [e.log.action for e in page.context["audit"]]
    assert "flag.create" in actions and len(actions) >= 2
    changed = next(e for e in page.context["audit"] if e.log.action != "flag.create")
    assert any(
        c.field == "enabled" and c.before is False and c.after is True for c in changed.changes
    )


# --- segments -------------------------------------------------------------------------------


def test_segments_list_counts_where_each_is_used(admin, admin_user, flag, envs, beta):
    flag_environment_update(
        flag=flag,
        environment=envs["staging"],
        actor=admin_user,
        rules=[{"type": "force", "segment": "beta", "variation": "on"}],
    )
    rows = admin.get("/p/shop/segments/").context["rows"]
    assert rows[0]["used_by"] == ["flag:new-checkout@staging"]


def test_create_edit_and_delete_a_segment(admin, beta):
    response = admin.post(
        "/p/shop/segments/new/",
        {
            "key": "staff",
            "name": "Staff",
            "condition": '{"email": {"$regex": "@example\\\\.com$"}}',
            "include": "u-1\nu-2\n\nu-1",
            "exclude": "u-9",
        },
    )
    assert response.status_code == 302
    staff = Segment.objects.get(key="staff")
    assert staff.include == ["u-1", "u-2"] and staff.exclude == ["u-9"]
    assert staff.condition == {"email": {"$regex": "@example\\.com$"}}
    admin.post("/p/shop/segments/staff/", {"key": "x", "name": "Staff!", "condition": ""})
    staff.refresh_from_db()
    assert staff.key == "staff" and staff.name == "Staff!" and staff.condition == {}
    bad = admin.post("/p/shop/segments/new/", {"key": "beta", "name": "Again"})
    assert bad.status_code == 200 and bad.context["form"].errors["key"]
    admin.post("/p/shop/segments/staff/delete/")
    assert not Segment.objects.filter(key="staff").exists()


def test_a_used_segment_is_not_deleted_and_the_page_says_why(admin, admin_user, flag, envs, beta):
    flag_environment_update(
        flag=flag,
        environment=envs["staging"],
        actor=admin_user,
        rules=[{"type": "force", "segment": "beta", "variation": "on"}],
    )
    response = admin.post("/p/shop/segments/beta/delete/", follow=True)
    assert response.status_code == 200
    assert "new-checkout" in " ".join(str(m) for m in response.context["messages"])
    assert Segment.objects.filter(key="beta").exists()


def test_json_fields_in_pages_are_rendered_as_json(admin, admin_user, flag, envs):
    rule = {"type": "force", "condition": {"country": "US"}, "variation": "on"}
    flag_environment_update(flag=flag, environment=envs["staging"], actor=admin_user, rules=[rule])
    page = admin.get(f"{FLAGS}new-checkout/?env=staging").content.decode()
    assert json.dumps({"country": "US"}).replace('"', "&quot;") in page


def test_an_admin_adds_an_environment_from_the_settings_page(project, admin, flag):
    from experiments.models import Environment
    from flags.models import FlagEnvironment

    client = admin
    page = client.get(f"/p/{project.slug}/settings/").content.decode()
    assert 'id="environment-create"' in page
    r = client.post(f"/p/{project.slug}/environments/new/", {"key": "qa", "name": "QA"})
    assert r.status_code == 302
    qa = Environment.objects.get(project=project, key="qa")
    assert qa.client_key in client.get(f"/p/{project.slug}/settings/").content.decode()
    configs = FlagEnvironment.objects.filter(environment=qa)
    assert configs.count() == 1 and not configs.get().enabled
    r = client.post(f"/p/{project.slug}/environments/new/", {"key": "qa"}, follow=True)
    assert "already" in r.content.decode()
    assert Environment.objects.filter(project=project, key="qa").count() == 1
