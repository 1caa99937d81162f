"""The results dashboard in headless Chromium: banner, table, every chart drawn, the view
toggles, a refresh that shows progress and then the new snapshot, the overview, nothing
loaded from outside the app, and the table's numbers against the results API."""

import math
import re
import time

import pytest

from analysis.models import AnalysisRun, ResultSnapshot
from analysis.tasks import run_analysis
from tests.analysis.test_exports import add_traffic, seed_results
from tests.browser.conftest import save_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Recorded before page scripts run: the CSP (no inline code or style) must hold with charts
# drawn and the dashboard swapped in by the refresh.
RECORD_CSP_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));
"""


@pytest.fixture
def experiment(project):
    return seed_results(project, looks=3, units=240)


@pytest.fixture
def queued(monkeypatch):
    """Stands in for the broker: records the tasks the web process sends, so the test can play
    the worker and run them when it chooses (a real worker is not running here)."""
    sent: list[tuple] = []
    monkeypatch.setattr("analysis.tasks.run_analysis.delay", lambda *args: sent.append(args))
    return sent


def charts_drawn(page) -> dict[str, int]:
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('[data-chart]')].map((f, i) => {
            const svg = f.querySelector('svg');
            const box = svg.getBoundingClientRect();
            const name = f.dataset.chart + (f.dataset.metric ? ':' + f.dataset.metric : '');
            return [name, box.width > 0 && box.height > 0 ? svg.querySelectorAll('*').length : 0];
        }))"""
    )


def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_dashboard_banner_table_charts_and_refresh(page, login, live_server, experiment, queued):
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/experiments/{experiment.key}/results/")
    snapshot = experiment.snapshots.latest()

    banner = page.locator("#recommendation")
    assert banner.is_visible()
    assert banner.get_attribute("data-action") == snapshot.recommendation
    assert snapshot.recommendation.upper() in banner.locator(".rec-word").inner_text()
    assert banner.locator(".rec-reasons li").count() == len(snapshot.reasons)
    assert page.locator("#computed-at").get_attribute("datetime") == (
        snapshot.computed_at.isoformat()
    )

    table = page.locator("#metrics")
    groups = table.locator("tbody.metric-group")
    roles = groups.evaluate_all("els => els.map(e => e.dataset.role)")
    assert roles == ["primary", "guardrail", "secondary"]
    assert table.locator("tr.arm-row").count() == 3
    assert table.locator("tr[data-metric=purchase] .status-pill").inner_text() in {
        "Improved",
        "Neutral",
        "Harmed",
    }

    page.wait_for_function("document.querySelectorAll('[data-chart] svg *').length > 0")
    drawn = charts_drawn(page)
    assert set(drawn) == {
        "progress",
        "interval:purchase",
        "interval:errors",
        "interval:revenue",
        "cumulative",
        "exposures",
    }
    assert all(count > 0 for count in drawn.values()), drawn
    assert all(count > 5 for name, count in drawn.items() if name != "progress"), drawn
    # the cumulative chart has one point per snapshot; the exposures chart one per variant too
    assert page.locator("[data-chart=cumulative] circle").count() == 3
    assert page.locator("[data-chart=exposures] circle").count() == 3 * 2

    # the view toggles switch the table's columns and the interval plots
    seq_label = page.locator("#metrics thead th").nth(6).inner_text()
    page.check("#view-toggle input[value=fixed]")
    assert page.locator("#metrics thead th").nth(6).inner_text() != seq_label
    assert "fixed-horizon ci" in page.locator("#metrics thead th").nth(6).inner_text().lower()
    page.check("#view-toggle input[value=bayes]")
    assert "chance to win" in page.locator("#metrics thead th").nth(7).inner_text().lower()
    assert charts_drawn(page)["interval:purchase"] > 5
    page.check("#view-toggle input[value=seq]")

    # Refresh: the click queues a run and shows progress; new traffic arrives, the "worker"
    # computes the snapshot, and the page swaps in the new snapshot without a reload.
    add_traffic(experiment, units=200, batch=9, lift=0.8, seed=42)
    page.click("#refresh")
    status = page.locator("#refresh-status")
    status.wait_for(state="visible")
    wait_until(lambda: queued)
    assert page.locator("#refresh-status .steps li.active").inner_text() == "Queued"
    [(experiment_id, run_id)] = queued
    assert AnalysisRun.objects.get(pk=run_id).status == "queued"
    run_analysis.apply(args=[experiment_id, run_id]).get()
    new = ResultSnapshot.objects.get(run_id=run_id)
    page.wait_for_function(
        "t => document.querySelector('#computed-at').getAttribute('datetime') === t",
        arg=new.computed_at.isoformat(),
    )
    assert status.get_attribute("data-step") == "done"
    assert "Updated to the snapshot computed at" in status.inner_text()
    assert f"{new.total_units:,} units" in banner.inner_text()
    assert page.locator("[data-chart=cumulative] circle").count() == 4
    assert all(count > 0 for count in charts_drawn(page).values())
    assert page.locator("#refresh").is_enabled()

    path = save_screenshot(page, "dashboard")
    assert path.exists() and path.stat().st_size > 20_000
    assert page.outside_requests == []
    assert page.evaluate("window.__csp") == []


def test_overview_filters_and_links_to_the_dashboard(page, login, live_server, experiment):
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/results/")
    row = page.locator("#overview tr[data-experiment=checkout-v2]")
    assert row.is_visible()
    action = experiment.snapshots.latest().recommendation
    assert row.locator("[data-recommendation]").get_attribute("data-recommendation") == action
    page.select_option("#filters select[name=status]", "paused")
    page.click("#filters button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert page.locator("#overview tr[data-experiment]").count() == 0
    page.select_option("#filters select[name=status]", "running")
    page.select_option("#filters select[name=recommendation]", action)
    page.click("#filters button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert page.locator("#overview tr[data-experiment]").count() == 1
    save_screenshot(page, "results-overview")
    page.click("#overview tr[data-experiment=checkout-v2] a")
    page.wait_for_load_state("networkidle")
    assert page.locator("#recommendation").is_visible()
    assert page.outside_requests == []


def test_download_buttons_fetch_the_tables(page, login, live_server, experiment):
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/experiments/{experiment.key}/results/")
    for fmt in ("csv", "json", "parquet"):
        with page.expect_download() as info:
            page.click(f"#download button[data-format={fmt}]")
        download = info.value
        assert download.suggested_filename.endswith(f".{fmt}")
        assert "-latest-" in download.suggested_filename
        assert download.failure() is None
    assert page.outside_requests == []


# --- the page's numbers against the results API ------------------------------------------------


def _number(text: str) -> float:
    """A number as the page prints it: unicode minus, thousands commas, a unit after it."""
    text = text.replace("−", "-").replace(",", "").strip()
    return float(re.match(r"[+-]?[0-9.]+", text).group())


def _assert_shown(text: str, value: float | None, *, scale: float, half_unit: float) -> None:
    """``text`` shows ``value`` x ``scale`` to its printed precision (``half_unit`` of it)."""
    if value is None:
        assert text.strip() in {"—", "-∞", "+∞"}, text
        return
    assert abs(_number(text) - value * scale) <= half_unit + 1e-9, (text, value)


def _assert_percent(text: str, value: float | None) -> None:
    _assert_shown(text, value, scale=100.0, half_unit=0.005)  # two decimals of a percent


def _assert_abs_lift(text: str, value: float | None, kind: str) -> None:
    if kind == "binomial":  # "+1.23 pp": two decimals of percentage points
        assert text.strip().endswith("pp"), text
        _assert_shown(text, value, scale=100.0, half_unit=0.005)
    elif value is not None and abs(value) >= 1000:  # whole numbers with commas
        _assert_shown(text, value, scale=1.0, half_unit=0.5)
    else:  # four significant digits
        digits = 0 if value in (None, 0) else 3 - math.floor(math.log10(abs(value)))
        _assert_shown(text, value, scale=1.0, half_unit=0.5 * 10.0**-digits)


def test_results_page_numbers_match_the_results_api(page, login, live_server, experiment):
    """Every lift, interval and p-value the table prints, and the recommendation word, are
    those of GET /api/v1/projects/P/experiments/K/results for the same snapshot (session auth
    in the same browser context), to the precision the page prints them."""
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/experiments/{experiment.key}/results/")
    response = page.request.get(
        f"{live_server.url}/api/v1/projects/shop/experiments/{experiment.key}/results"
    )
    assert response.status == 200, response.text()
    api = response.json()
    # the same snapshot on both sides
    assert page.locator("#computed-at").get_attribute("datetime") == api["computed_at"]
    assert api["snapshot_id"] == experiment.snapshots.latest().pk

    word = page.locator("#recommendation .rec-word").inner_text().strip()
    assert word == api["recommendation"]["action"].upper()
    assert (
        page.locator("#recommendation").get_attribute("data-action")
        == (api["recommendation"]["action"])
    )

    rows = page.locator("#metrics tr.arm-row")
    assert rows.count() == len(api["metrics"]) == 3
    for m in api["metrics"]:
        row = page.locator(
            f"#metrics tr.arm-row[data-metric='{m['metric']}'][data-variant='{m['variant']}']"
        )
        assert row.count() == 1, (m["metric"], m["variant"])
        assert f"outcome-{m['status'] or 'none'}" in row.get_attribute("class").split()
        lift_rel = row.locator("td.lift")
        _assert_percent(lift_rel.text_content(), m["lift_rel"])
        lift_abs = row.locator("xpath=td[contains(@class, 'lift')]/preceding-sibling::td[1]")
        _assert_abs_lift(lift_abs.text_content(), m["lift_abs"], m["kind"])
        interval = row.locator("xpath=td[contains(@class, 'lift')]/following-sibling::td[1]")
        low, _, high = interval.locator(".v-seq").text_content().partition(" to ")
        assert high, interval.text_content()
        _assert_percent(low, m["ci_low"])
        _assert_percent(high, m["ci_high"])
        p_cell = row.locator("xpath=td[contains(@class, 'lift')]/following-sibling::td[2]")
        p_text = p_cell.locator(".v-seq").text_content().strip()
        if p_text.startswith("< 0.001"):
            assert m["p_value"] < 0.001
        else:
            _assert_shown(p_text, m["p_value"], scale=1.0, half_unit=0.0005)
    assert page.outside_requests == []
