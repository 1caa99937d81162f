"""A product manager ships a feature behind a flag in headless Chromium (the issue's scenario):
create a segment with the condition builder and a flag, add a segment rule and a 10% rollout
with the slider, preview a unit, turn the flag on in production, flip the kill switch with
its confirmation, and read the audit entries. The preview shows what evaluate_flags answers."""

import json
import re

import pytest
from playwright.sync_api import expect

from bucketing.flags import evaluate_flags
from experiments.models import AuditLog, Environment, Segment
from flags.models import Flag, FlagEnvironment
from flags.selectors import environment_flags
from tests.browser.conftest import save_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def set_range(page, locator, value: str) -> None:
    """Move a range input as a drag would: set it and fire `input`."""
    locator.evaluate(
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
        value,
    )


def preview(page, unit: str, attributes: str) -> dict[str, tuple[str, str, str]]:
    page.fill("#id_unit_id", unit)
    page.fill("#id_attributes", attributes)
    page.click("#preview-run")
    expect(page.locator("#preview-results")).to_be_visible()
    shown = {}
    for row in page.locator("#preview-results tbody tr").all():
        shown[row.get_attribute("data-env")] = (
            row.locator(".variation").inner_text(),
            row.locator(".reason").inner_text(),
            row.locator(".value").inner_text(),
        )
    return shown


def expected(unit: str, attributes: dict, environment: str) -> tuple[str, str, str]:
    env = Environment.objects.get(project__slug="shop", key=environment)
    result = evaluate_flags(
        environment_flags(env).specs, {**attributes, "id": unit}, ["new-checkout"]
    )["new-checkout"]
    return result.variation, result.reason, json.dumps(result.value)


def test_pm_creates_a_flag_rolls_it_out_previews_and_kills_it(
    page, login, live_server, admin_user, project
):
    login("alice", "pw-alice-123")
    base = f"{live_server.url}/p/shop"

    # A segment, with the condition builder writing the JSON.
    page.goto(f"{base}/flags/")
    page.click("#nav-segments")
    page.click("#new-segment")
    page.fill("#id_name", "Beta testers")
    page.fill("#id_key", "beta")
    page.click(".cond-add")
    page.fill(".cond-row .cond-attr", "plan")
    page.fill(".cond-row .cond-value", "beta")
    assert json.loads(page.input_value("#id_condition")) == {"plan": "beta"}
    page.fill("#id_include", "vip-1\nvip-2")
    page.click("#save-segment")
    expect(page.locator("#segments")).to_contain_text("Beta testers")
    assert Segment.objects.get(key="beta").include == ["vip-1", "vip-2"]

    # The flag.
    page.click("#nav-flags")
    page.click("#new-flag")
    page.fill("#id_name", "New checkout")
    page.fill("#id_key", "new-checkout")
    page.fill("#id_tags", "checkout")
    page.click("#save")
    expect(page).to_have_url(re.compile(r"/p/shop/flags/new-checkout/$"))
    expect(page.locator("#messages")).to_contain_text("Flag new-checkout created")

    # Rules in production: the segment gets it; then 10% of US/CA units.
    page.click("#tab-production")
    page.click("#edit-rules")
    page.click("#add-rule")
    page.select_option('[name="rules-0-type"]', "force")
    page.select_option('[name="rules-0-segment"]', "beta")
    page.select_option('[name="rules-0-variation"]', "on")
    page.click("#add-rule")
    page.select_option('[name="rules-1-type"]', "rollout")
    rollout = page.locator("tr.rule-row").nth(1)
    expect(rollout.locator(".rollout")).to_be_visible()
    expect(rollout.locator('[data-show-for="force"]')).to_be_hidden()
    set_range(page, rollout.locator(".rollout-slider").first, "10")
    assert page.input_value('[name="rules-1-w0"]') == "10"
    assert page.input_value('[name="rules-1-w1"]') == "90"
    expect(rollout.locator(".rollout-total")).to_have_text("Shares sum to 100%.")
    rollout.locator(".cond-add").click()
    rollout.locator(".cond-attr").fill("country")
    rollout.locator(".cond-op").select_option("$in")
    rollout.locator(".cond-value").fill("US, CA")
    condition = json.loads(page.input_value('[name="rules-1-condition"]'))
    assert condition == {"country": {"$in": ["US", "CA"]}}
    save_screenshot(page, "flag-rules-editor")
    page.click("#save-rules")
    expect(page.locator("#messages")).to_contain_text("Rules of new-checkout in Production saved")
    expect(page.locator("#rules li")).to_have_count(2)
    expect(page.locator("#rules")).to_contain_text("10%")
    production = FlagEnvironment.objects.get(
        flag__key="new-checkout", environment__key="production"
    )
    force, ten = production.rules
    assert (force["segment"], force["variation"]) == ("beta", "on")
    assert ten["weights"] == {"on": 0.1, "off": 0.9} and ten["condition"] == condition

    # Preview while off: every environment serves the off variation.
    shown = preview(page, "vip-1", '{"country": "US"}')
    assert shown["production"] == expected("vip-1", {"country": "US"}, "production")
    assert shown["production"][:2] == ("off", "off")

    # On in production: asked on the page first.
    page.click("#toggle-new-checkout-production")
    expect(page.locator("#confirm-new-checkout-production")).to_be_visible()
    assert not FlagEnvironment.objects.get(pk=production.pk).enabled
    page.click("#confirm-new-checkout-production")
    expect(page.locator("#messages")).to_contain_text("new-checkout is on in Production")

    # Preview again: the segment's member by rule, others by the rollout, as evaluate_flags.
    attributes = {"country": "US"}
    shown = preview(page, "vip-1", json.dumps(attributes))
    assert shown["production"] == expected("vip-1", attributes, "production")
    assert shown["production"][:2] == ("on", "rule")
    rolled = 0
    for unit in [f"user-{i}" for i in range(12)]:
        shown = preview(page, unit, json.dumps(attributes))
        assert shown["production"] == expected(unit, attributes, "production")
        assert shown["production"][1] == "rollout"
        rolled += shown["production"][0] == "on"
        assert shown["staging"][1] == "off"
    assert rolled < 12  # 10%: not everyone
    save_screenshot(page, "flag-preview")

    # The kill switch from the list, with its confirmation.
    page.click("#nav-flags")
    row = page.locator('#flags tr[data-key="new-checkout"]')
    expect(row.locator("#toggle-new-checkout-production")).to_have_text("On")
    row.locator("#toggle-new-checkout-production").click()
    confirm = row.locator("#confirm-new-checkout-production")
    expect(confirm).to_be_visible()
    expect(row.locator(".confirm-step")).to_contain_text("off in Production")
    save_screenshot(page, "flag-kill-switch-confirm")
    confirm.click()
    expect(page.locator("#messages")).to_contain_text("new-checkout is off in Production")
    expect(row.locator("#toggle-new-checkout-production")).to_have_text("Off")
    assert not FlagEnvironment.objects.get(pk=production.pk).enabled

    # The audit entries, with before and after.
    page.click('#flags tr[data-key="new-checkout"] a')
    audit = page.locator("#audit-log li")
    expect(audit.first).to_contain_text("flag.update")
    expect(page.locator("#audit-log")).to_contain_text("flag.create")
    updates = AuditLog.objects.filter(target="flag:new-checkout", action="flag.update")
    switches = [(e.before["enabled"], e.after["enabled"]) for e in updates.order_by("id")]
    assert switches[-2:] == [(False, True), (True, False)]
    assert audit.count() == AuditLog.objects.filter(target="flag:new-checkout").count()
    kill = audit.first
    expect(kill.locator("table.changes")).to_contain_text("enabled")
    expect(kill.locator("td.before")).to_have_text("true")
    expect(kill.locator("td.after")).to_have_text("false")
    save_screenshot(page, "flag-audit")
    assert Flag.objects.get(key="new-checkout").owner == admin_user
    assert page.outside_requests == []
