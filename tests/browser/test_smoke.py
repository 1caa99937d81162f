"""The login page and experiment list render in a real browser, loading nothing from outside."""

import pytest

from tests.browser.conftest import save_screenshot
from tests.factories import running_experiment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_then_experiment_list(page, login, live_server, admin_user, project, metrics):
    running_experiment(project)
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/")
    assert page.locator("#experiments").get_by_text("checkout-v2").is_visible()
    save_screenshot(page, "experiment-list")
    assert page.outside_requests == []
