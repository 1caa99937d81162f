"""The release monitoring page in headless Chromium: from the flag page to a release with checks,
its steps on a timeline, one SVG chart per metric (and the units per side), a new check picked
up by the 15 s refresh, no console errors and no CSP violations; "Roll back" asks on the page,
and once confirmed the release is rolled back and the flag serves the baseline."""

import re
from datetime import timedelta

import numpy as np
import pytest
from playwright.sync_api import expect

from experiments.models import Environment
from experiments.services import metric_create
from flags.models import FlagEnvironment
from flags.services import flag_create, flag_environment_update
from releases.models import ReleaseStatus
from releases.monitor import release_analyze
from releases.services import release_create
from tests.browser.conftest import save_screenshot
from tests.browser.test_dashboard import RECORD_CSP_VIOLATIONS
from tests.releases.conftest import simulate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STEPS = [
    {"percent": 10, "min_minutes": 0, "min_units": 200},
    {"percent": 50, "min_minutes": 30, "min_units": 200},
    {"percent": 100, "min_minutes": 0, "min_units": 0},
]


@pytest.fixture
def release(project, admin_user):
    """A release in production with two checks: one that advanced it from 10% to 50%, one that
    holds at 50% (its 30 minutes are not over)."""
    production = Environment.objects.get(project=project, key="production")
    flag = flag_create(project=project, key="new-checkout", name="New checkout", actor=admin_user)
    flag_environment_update(
        flag=flag, environment=production, actor=admin_user, enabled=True, default_variation="off"
    )
    metric_create(
        project=project, key="error-rate", name="Errors per request", kind="ratio",
        event_name="error", denominator_event="request", direction="decrease",
    )  # fmt: skip
    metric_create(
        project=project, key="latency-p95", name="Latency p95", kind="quantile",
        event_name="latency_ms", direction="decrease", quantile=0.95,
    )  # fmt: skip
    release = release_create(
        project=project, flag=flag, environment=production, variation="on", steps=STEPS,
        metrics=[{"metric": "error-rate", "non_inferiority_margin": 0.1},
                 {"metric": "latency-p95"}],
        actor=admin_user,
    )  # fmt: skip
    rng = np.random.default_rng(11)
    for step, (units, share) in enumerate([(2500, 0.1), (600, 0.5)]):
        release.refresh_from_db()
        at = release.step_started_at + timedelta(seconds=5)
        simulate(project=project, environment=production, flag=flag, at=at, units=units,
                 share_new=share, rng=rng, prefix=f"s{step}-")  # fmt: skip
        through = at + timedelta(minutes=1)
        release_analyze(release.pk, through=through, now=through)
    release.refresh_from_db()
    assert (release.status, release.step) == (ReleaseStatus.RUNNING, 1)
    return release


def test_release_page_shows_steps_and_charts_and_rolls_back_after_confirmation(
    page, login, live_server, release
):
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.clock.install()  # the 15 s refresh runs when the test moves the clock
    login("alice", "pw-alice-123")

    # From the flag page's Releases section to the release.
    page.goto(f"{live_server.url}/p/shop/flags/new-checkout/?env=production")
    section = page.locator("#releases")
    expect(section.locator(f'tr[data-release="{release.pk}"]')).to_contain_text("Running")
    href = section.locator("#start-release").get_attribute("href")
    assert href.endswith("?flag=new-checkout&environment=production")
    section.locator(f'tr[data-release="{release.pk}"] a').click()
    expect(page.locator("#status")).to_have_text("Running")

    # The steps on a timeline: the first done, the second current, the last to come.
    steps = page.locator("#steps li.step")
    expect(steps).to_have_count(3)
    assert steps.evaluate_all("els => els.map(e => e.dataset.state)") == [
        "done",
        "current",
        "pending",
    ]
    expect(steps.nth(0).locator(".transition")).to_contain_text("advanced from 10% to 50%")
    expect(page.locator("#decision-headline")).to_contain_text("Holding at 50%")
    expect(page.locator("#decision-waits")).to_contain_text("more minutes at 50%")

    # One chart per metric, drawn: both sides' lines, the interval, the tolerated line; and units.
    page.wait_for_function("document.querySelectorAll('[data-chart] svg path.line').length >= 6")
    for key in ("error-rate", "latency-p95"):
        chart = page.locator(f'[data-chart="metric"][data-metric="{key}"] svg')
        expect(chart).to_be_visible()
        assert chart.locator("path.line.new").count() == 2  # one segment per step
        assert chart.locator("path.line.baseline").count() == 2
        assert chart.locator("path.line.difference").count() == 2
        assert chart.locator(".band, .band-line").count() >= 1
        assert chart.locator("path.tolerated").count() >= 1
        assert chart.locator("line.step-line").count() == 2  # 10% and 50% began
        box = chart.bounding_box()
        assert box["width"] > 300 and box["height"] > 200
    units = page.locator('[data-chart="units"] svg')
    assert units.locator("path.line").count() == 4 and units.locator("path.minimum").count() == 2
    expect(page.locator("#latest-table tbody tr")).to_have_count(2)
    save_screenshot(page, "release-page")

    # The monitor analyses again (still holding): the page picks it up at its next refresh.
    release.refresh_from_db()
    at = release.step_started_at + timedelta(minutes=2)
    simulate(project=release.project, environment=release.environment, flag=release.flag, at=at,
             units=300, share_new=0.5, rng=np.random.default_rng(12), prefix="late-")  # fmt: skip
    check = release_analyze(release.pk, through=at + timedelta(seconds=30))
    assert check.action == "hold"
    before = page.locator("#latest-when").inner_text()
    page.clock.fast_forward("00:16")
    expect(page.locator("#refresh-note")).to_contain_text("Refreshed at")
    expect(page.locator("#latest-when")).not_to_have_text(before)
    expect(page.locator("#latest-when")).to_contain_text(f"{check.units['new']} new")
    assert page.locator('[data-chart="units"] circle.dot.new').count() == 3
    expect(page.locator("#status")).to_have_text("Running")  # nothing moved: no reload
    expect(page.locator("#decision")).to_have_class(re.compile(r"\bdecision-card\b.*decision-hold"))

    # Roll back: asked on the page first; nothing moves until confirmed.
    page.click("#action-rollback")
    confirm = page.locator("#confirm-rollback")
    expect(confirm).to_be_visible()
    expect(page.locator('.release-action[data-action="rollback"] .confirm-step')).to_contain_text(
        "Every unit gets the baseline"
    )
    release.refresh_from_db()
    assert release.status == ReleaseStatus.RUNNING
    page.fill("#reason-rollback", "checkout errors in the logs")
    save_screenshot(page, "release-rollback-confirm")
    confirm.click()
    expect(page.locator("#status")).to_have_text("Rolled back")
    expect(page.locator("#messages")).to_contain_text("Rolled back")
    expect(page.locator("#steps li.step").nth(1)).to_have_attribute("data-state", "stopped")
    expect(page.locator("#steps")).to_contain_text("checkout errors in the logs")
    expect(page.locator("#actions")).to_have_count(0)
    release.refresh_from_db()
    assert release.status == ReleaseStatus.ROLLED_BACK
    assert release.transitions.last().reason == "checkout errors in the logs"
    config = FlagEnvironment.objects.get(flag=release.flag, environment=release.environment)
    assert config.default_variation == "off" and not config.rules

    assert problems == []
    assert page.evaluate("window.__csp") == []
    assert page.outside_requests == []
