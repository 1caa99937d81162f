"""The daily lift panel in headless Chromium: one chart per metric with a dot and interval per
day, the calendar and since-exposure axes, the novelty verdict with its p-value beside the
chart, the numbers of the results/daily endpoint, and nothing from outside the app."""

import pytest

from analysis.models import TimeView
from tests.analysis.test_time_views import WINDOW_DAYS, seed_time_views
from tests.browser.conftest import save_screenshot
from tests.browser.test_dashboard import RECORD_CSP_VIOLATIONS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def experiment(project):
    return seed_time_views(project)


def test_daily_lift_charts_axes_and_novelty_verdict(page, login, live_server, experiment):
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/experiments/{experiment.key}/results/")
    view = TimeView.objects.get(experiment=experiment)

    panel = page.locator("#time-views")
    panel.scroll_into_view_if_needed()
    assert panel.get_attribute("data-axis") == "calendar"
    charts = panel.locator("[data-daily-chart]")
    assert charts.evaluate_all("els => els.map(e => e.dataset.dailyChart)") == [
        "sessions",
        "buyers",
    ]

    # Calendar days: one dot per (arm, day) with a lift, an interval bar on each bounded one.
    sessions = panel.locator('[data-daily-chart="sessions"] svg')
    rows = [r for r in view.daily if r["metric"] == "sessions" and r["lift_rel"] is not None]
    assert sessions.get_attribute("data-days") == str(
        len({r["date"] for r in view.daily if r["metric"] == "sessions"})
    )
    assert sessions.locator("g.day circle").count() == len(rows)
    assert sessions.locator("g.day line").count() == sum(r["ci_low"] is not None for r in rows)
    # the cut-off's day, drawn hollow (when it already has a lift: not just after midnight)
    assert sessions.locator("g.partial-day").count() == sum(r["partial"] for r in rows)
    first = rows[0]
    tip = sessions.locator(f'g.day[data-x="{first["date"]}"] title').text_content()
    # As the page prints it (static/abacus/time_views.js pct): a sign only above zero, so a
    # day whose arms tie reads "0.00%".
    lift = first["lift_rel"]
    assert ("+" if lift > 0 else "") + f"{lift * 100:.2f}%".replace("-", "−") in tip

    # The novelty verdict sits under its chart, with the p-value it rests on.
    trend = next(t for t in view.trends if t["metric"] == "sessions")
    verdict = panel.locator('[data-daily-chart="sessions"] .novelty')
    assert verdict.get_attribute("data-verdict") == trend["verdict"] == "fading"
    text = verdict.inner_text()
    assert text.startswith("Novelty: effect fading")
    p = trend["adjusted_p_value"]
    assert ("p = < 0.001" if p < 0.001 else f"p = {p:.3f}") in text

    # Days since exposure: one column per complete day, and the trend line the test fits.
    page.check("#time-axis input[value=since_exposure]")
    assert panel.get_attribute("data-axis") == "since_exposure"
    assert sessions.get_attribute("data-days") == str(WINDOW_DAYS)
    assert sessions.locator("line.trend-line").count() == 1
    assert sessions.locator("text", has_text="day 0").count() == 1

    save_screenshot(page, "daily-lift")
    assert page.outside_requests == []
    assert page.evaluate("window.__csp") == []


def test_before_the_first_computation_the_panel_says_so(page, login, live_server, experiment):
    TimeView.objects.filter(experiment=experiment).delete()
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/experiments/{experiment.key}/results/")
    assert "computed by the analysis run" in page.locator("#time-views-pending").inner_text()
    assert page.locator("[data-daily-chart]").count() == 0
