"""The results page's breakdown section in headless Chromium: pick an attribute from those seen,
read a table per level with lifts, intervals, the multiple-testing note and the heterogeneity
p-values (the same as the API's), download it; a bad attribute says why."""

import pytest

from analysis.results_display import p_value
from tests.analysis import test_breakdown as breakdown_tests
from tests.browser.conftest import save_screenshot
from tests.browser.test_dashboard import RECORD_CSP_VIOLATIONS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The breakdown API tests' experiment: exposures with country and platform, one snapshot.
bare, shop = breakdown_tests.bare, breakdown_tests.shop


def test_the_breakdown_section_shows_levels_note_and_heterogeneity(
    page, login, live_server, shop, api
):
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/experiments/{shop.key}/results/")
    options = page.locator("#breakdown-dimension option").all_inner_texts()
    assert options == ["country", "platform"]  # the attributes the exposures carried
    page.select_option("#breakdown-dimension", "country")
    page.click("#breakdown-show")
    page.wait_for_selector("#breakdown-levels")
    assert "dimension=country" in page.url
    levels = page.locator("#breakdown-levels tbody.breakdown-level")
    assert [levels.nth(i).get_attribute("data-level") for i in range(levels.count())] == [
        "DE",
        "FR",
        "US",
        "(none)",
    ]
    assert "320 units" in levels.nth(0).locator("th.level-name").inner_text()
    de = levels.nth(0).locator('tr[data-metric="purchase"]')
    assert de.locator(".status-pill").inner_text() == "Improved"
    assert " to " in de.locator("td").nth(5).inner_text()  # the interval
    note = page.locator("#breakdown-note").inner_text()
    assert "Benjamini-Hochberg" in note and "Exploratory" in note
    data = api.get(
        f"/api/v1/projects/shop/experiments/{shop.key}/results/breakdown?dimension=country"
    ).json()
    for test in data["heterogeneity"]:
        row = page.locator(
            f'#breakdown-heterogeneity tr[data-metric="{test["metric"]}"]'
            f'[data-variant="{test["variant"]}"]'
        )
        assert row.locator(".heterogeneity-p").inner_text() == p_value(test["adjusted_p_value"])
    purchase = page.locator('#breakdown-heterogeneity tr[data-metric="purchase"]')
    assert purchase.locator(".status-pill").inner_text() == "differs by level"
    with page.expect_download() as info:
        page.click("#breakdown-download")
    assert "breakdown-country" in info.value.suggested_filename
    assert info.value.failure() is None
    save_screenshot(page, "breakdown")
    assert page.evaluate("window.__csp") == []
    assert page.outside_requests == []


def test_a_bad_attribute_is_explained_on_the_page(page, login, live_server, shop):
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/experiments/{shop.key}/results/?dimension=a%22b")
    assert "quotes" in page.locator("#breakdown-error").inner_text()
    assert page.locator("#breakdown-levels").count() == 0
