"""The holdout page in headless Chromium: an admin creates a holdout from the empty page, starts
it (the page asks for a tick first), and once a comparison is stored reads every metric's lift,
always-valid interval (a bar on a shared scale) and verdict, and the lifts over time; no console
errors, no CSP violations, nothing requested outside the app."""

import random
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from analysis.holdouts import holdout_analyze
from assignments.models import HoldoutArm, HoldoutExposure, MetricEvent
from experiments.models import Holdout
from experiments.services import metric_create
from tests.browser.conftest import save_screenshot
from tests.browser.test_dashboard import RECORD_CSP_VIOLATIONS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _comparisons(project, holdout):
    """Units of both arms over two weeks, the general arm buying more; two comparisons."""
    rng = random.Random(4)
    start = holdout.started_at - timedelta(days=14)
    Holdout.objects.filter(pk=holdout.pk).update(started_at=start)
    for i in range(400):
        arm = HoldoutArm.HOLDOUT if i % 2 else HoldoutArm.GENERAL
        t0 = start + timedelta(hours=rng.uniform(0, 24 * 12))
        HoldoutExposure.objects.create(holdout=holdout, unit_id=f"u{i}", arm=arm, ts=t0)
        rate = 0.3 if arm == HoldoutArm.HOLDOUT else 0.6
        if rng.random() < rate:
            MetricEvent.objects.create(
                project=project, event_id=f"e{i}", name="purchase", unit_id=f"u{i}",
                value=rng.uniform(5, 50), ts=t0 + timedelta(hours=rng.uniform(0, 30)),
            )  # fmt: skip
    holdout_analyze(holdout_id=holdout.pk, through=start + timedelta(days=7))
    holdout_analyze(holdout_id=holdout.pk, through=start + timedelta(days=14))


def test_an_admin_creates_starts_and_reads_a_holdout(page, live_server, login, project):
    for key, kind in (("buyers", "binomial"), ("revenue", "mean")):
        metric_create(project=project, key=key, name=key.title(), kind=kind, event_name="purchase")
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/holdout/")
    expect(page.locator("#no-holdout")).to_be_visible()

    page.click("#new-holdout")
    page.fill("input[name=name]", "2027 holdout")
    page.fill("input[name=share]", "30")  # above 20%: refused next to the field
    page.click("#save-holdout")
    expect(page.locator("#field-share .field-error")).to_be_visible()
    page.fill("input[name=share]", "5")
    page.click("#save-holdout")
    expect(page.locator("#holdout-status")).to_have_text("draft")
    expect(page.locator("#holdout-share")).to_contain_text("5%")

    page.click("#start-holdout")  # the tick is required: the browser does not send the form
    expect(page.locator("#holdout-status")).to_have_text("draft")
    page.check("#confirm-start")
    page.click("#start-holdout")
    expect(page.locator("#holdout-status")).to_have_text("running")
    expect(page.locator("#no-comparison")).to_be_visible()

    holdout = Holdout.objects.get(project=project)
    _comparisons(project, holdout)
    page.reload()
    table = page.locator("#holdout-metrics")
    expect(table.locator("tbody tr")).to_have_count(2)
    buyers = table.locator("tr[data-metric=buyers]")
    expect(buyers).to_have_attribute("data-status", "better")
    expect(buyers.locator(".lift")).to_contain_text("+")
    expect(buyers.locator("svg.ci-bar")).to_be_visible()
    expect(page.locator("#units-holdout")).to_have_text("200")
    expect(page.locator("#holdout-history tbody tr")).to_have_count(2)
    save_screenshot(page, "holdout-page")

    assert problems == []
    assert page.evaluate("window.__csp") == []
    assert page.outside_requests == []
