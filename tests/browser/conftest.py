"""Headless Chromium (Debian's package) driven by Playwright, against Django's live server.

The tests skip, saying why, where /usr/bin/chromium is missing; in CI (`CI` set, as .ci/run does)
a missing browser fails them instead, so a broken install cannot pass as skipped tests. Never
`playwright install`: no browser downloads here.
"""

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_chromium() -> None:
    """Skip the calling test where Chromium is missing; fail it in CI."""
    if os.path.exists(CHROMIUM):
        return
    message = f"{CHROMIUM} not found: install Debian's chromium to run the browser tests"
    if in_ci():
        pytest.fail(f"{message} (CI is set: browser tests must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    require_chromium()
    # Playwright's sync API runs an event loop; let Django's ORM run beside it in tests.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh page; records every request so tests can check nothing left the app."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.outside_requests = []
    origin = live_server.url

    def record(request):
        if not request.url.startswith((origin, "data:", "blob:", "about:")):
            page.outside_requests.append(request.url)

    page.on("request", record)
    yield page
    context.close()


@pytest.fixture
def login(page, live_server):
    def do(username: str, password: str) -> None:
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")

    return do


def save_screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
