"""Every page renders in a real browser under the Content-Security-Policy without a violation.

The policy forbids inline scripts and styles and anything from another origin, so a template
that slips in `<script>...</script>`, a `style=` attribute or a CDN link fails here.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Error as PlaywrightError

from analysis.services import analysis_run
from assignments.services import events_ingest
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.factories import running_experiment
from tests.security.endpoints import all_endpoints, concrete_urls

pytestmark = [pytest.mark.security, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Recorded before any page script runs; CSP does not apply to scripts the browser injects.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(
  `${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`
));
"""


def _pages(project) -> list[str]:
    values = {"project": "shop", "key": "checkout-v2", "metric_key": "purchase"}
    urls = ["/accounts/login/", "/api/v1/docs/", "/admin/", "/admin/experiments/experiment/"]
    for endpoint in all_endpoints():
        template = endpoint.template
        if template.startswith(("api/", "admin/", "accounts/", "healthz", "readyz")):
            continue
        if any(name not in values for name in endpoint.params if name not in endpoint.choices):
            continue  # pages for one member or key: the settings page shows them
        urls.extend(concrete_urls(endpoint, values))
    return urls


def _browse(base: str, urls: list[str], found: dict) -> None:
    """Log in and open each page, recording CSP violations and requests to other origins.

    Runs in its own thread: Playwright's sync API allows one instance per thread, and the
    page tests in tests/browser keep theirs open for the whole session.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(15_000)
            page.add_init_script(RECORD_VIOLATIONS)
            page.on(
                "console",
                lambda m: (
                    found["problems"].append(m.text)
                    if "Content Security Policy" in m.text
                    else None
                ),
            )
            page.on(
                "request",
                lambda r: (
                    None
                    if r.url.startswith((base, "data:", "blob:", "about:"))
                    else found["outside"].append(r.url)
                ),
            )
            page.goto(f"{base}/accounts/login/")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "pw-alice-123")
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            for url in urls:
                try:
                    response = page.goto(base + url)
                except PlaywrightError:
                    continue  # POST-only actions answer GET with an empty 405
                if response is None or response.status >= 400:
                    continue
                page.wait_for_load_state("networkidle")
                if url == "/api/v1/docs/":  # Swagger UI really ran: its scripts were allowed
                    page.wait_for_selector(".swagger-ui .info", timeout=15_000)
                if not response.headers.get("content-security-policy"):
                    found["problems"].append(f"{url}: no Content-Security-Policy header")
                found["visited"] += 1
                found["problems"].extend(f"{url}: {v}" for v in page.evaluate("window.__csp"))
        finally:
            browser.close()


def test_pages_satisfy_the_content_security_policy(live_server, project, metrics):
    """No CSP violation on any page a superuser can open (UI, results, API docs, admin)."""
    require_chromium()  # skips where Chromium is missing, fails in CI
    get_user_model().objects.filter(username="alice").update(is_superuser=True, is_staff=True)
    experiment = running_experiment(project)
    events = [
        {
            "event_id": f"x{i}",
            "type": "exposure",
            "experiment": experiment.key,
            "variant": "control" if i % 2 else "treatment",
            "unit_id": f"u{i}",
            "timestamp": (experiment.started_at + timedelta(milliseconds=i + 1)).isoformat(),
        }
        for i in range(100)
    ]
    events_ingest(project=project, events=events)
    time.sleep(0.2)
    analysis_run(experiment_id=experiment.pk)  # so the results pages draw their charts
    found: dict = {"problems": [], "outside": [], "visited": 0, "error": None}

    def run() -> None:
        try:
            _browse(live_server.url, _pages(project), found)
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            found["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=240)
    if found["error"] is not None:
        raise found["error"]
    assert not thread.is_alive(), "the browser did not finish in 240 s"
    assert found["visited"] >= 6
    assert not found["problems"], "\n".join(found["problems"])
    assert found["outside"] == []
