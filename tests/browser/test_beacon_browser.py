"""Events from browsers, in headless Chromium: a page served from another origin (a second
HTTP server on its own port) loads static/abacus/beacon.js from abacus's live server, records
exposures and events, and is closed; every event is in the database exactly once. A page of an
origin the environment does not allow is refused, its beacons and its fetches alike."""

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from assignments.beacon_api import BeaconEventsApi
from assignments.models import Exposure, FlagExposure, MetricEvent
from experiments.services import environment_browser_update
from flags.services import flag_create
from tests.factories import running_experiment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BEACON = "/api/v1/events/beacon"
# 2 exposures and 25 events: the 20th fills a batch (sent at once), the last 7 wait for the
# page to be hidden or closed (the timer is a minute).
PAGE = """<!doctype html><html><head><title>shop</title>
<script src="{abacus}/static/abacus/beacon.js"></script></head><body><p>shop</p>
<script>
abacus.init({{host: "{abacus}", key: "{key}", unitId: "{unit}", flushInterval: 60000}});
abacus.exposure({{experiment: "checkout-v2", variant: "treatment"}});
abacus.exposure({{flag: "new-checkout", variation: "on"}});
for (var i = 0; i < 25; i++) abacus.track("purchase", {{value: i, properties: {{i: i}}}});
</script></body></html>"""


class Pages:
    """A tiny web server of its own (another origin than abacus) serving one page."""

    def __init__(self) -> None:
        self.html = ""
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = pages.html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sites() -> Iterator[tuple[Pages, Pages]]:
    allowed, other = Pages(), Pages()
    yield allowed, other
    allowed.close()
    other.close()


@pytest.fixture
def answered(monkeypatch) -> list[tuple[str, int]]:
    """What the beacon endpoint answered, as the server saw it (method, status): the browser
    reports no answer to a sendBeacon."""
    answers: list[tuple[str, int]] = []
    finalize = BeaconEventsApi.finalize_response

    def recording(self, request, response, *args, **kwargs):
        response = finalize(self, request, response, *args, **kwargs)
        answers.append((request.method, response.status_code))
        return response

    monkeypatch.setattr(BeaconEventsApi, "finalize_response", recording)
    return answers


def wait_for(condition, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def stored(unit: str) -> int:
    return (
        MetricEvent.objects.filter(unit_id=unit).count()
        + Exposure.objects.filter(unit_id=unit).count()
        + FlagExposure.objects.filter(unit_id=unit).count()
    )


def open_page(browser, pages: Pages, live_server, key: str, unit: str):
    """The page in a context of its own; every request it makes to abacus is recorded."""
    pages.html = PAGE.format(abacus=live_server.url, key=key, unit=unit)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    seen: list[tuple[str, str]] = []
    context.on(
        "request",
        lambda r: seen.append((r.method, r.url)) if r.url.startswith(live_server.url) else None,
    )
    page.goto(pages.origin + "/")
    return context, page, seen


def test_page_posts_exposures_and_events_once_and_flushes_when_closed(
    browser, live_server, project, metrics, sites, answered
):
    """Loaded from abacus, the script batches by size, sends the rest when the page closes,
    and each of the 27 events is stored exactly once with its own random event id."""
    allowed, _ = sites
    running_experiment(project)
    flag_create(project=project, key="new-checkout", name="New checkout")
    production = project.environments.get(key="production")
    environment_browser_update(environment=production, origins=[allowed.origin], enabled=True)
    unit = f"u-{uuid.uuid4().hex[:8]}"

    context, page, seen = open_page(browser, allowed, live_server, production.browser_key, unit)
    assert wait_for(lambda: stored(unit) == 20), stored(unit)  # the full batch, at once
    assert page.evaluate("abacus.pending()") == 7
    before_close = list(seen)
    page.close()  # pagehide: the last 7 leave by sendBeacon
    assert wait_for(lambda: stored(unit) == 27), stored(unit)
    time.sleep(1.0)  # nothing more arrives: no batch was sent twice
    context.close()

    metric_ids = list(MetricEvent.objects.filter(unit_id=unit).values_list("event_id", flat=True))
    exposure_ids = list(Exposure.objects.filter(unit_id=unit).values_list("event_id", flat=True))
    flag_ids = list(FlagExposure.objects.filter(unit_id=unit).values_list("event_id", flat=True))
    ids = metric_ids + exposure_ids + flag_ids
    assert len(metric_ids) == 25 and len(exposure_ids) == 1 and len(flag_ids) == 1
    assert len(set(ids)) == 27 and all(uuid.UUID(i).version == 4 for i in ids)
    values = sorted(MetricEvent.objects.filter(unit_id=unit).values_list("value", flat=True))
    assert values == [float(i) for i in range(25)]
    assert FlagExposure.objects.get(unit_id=unit).environment == production
    assert answered == [("POST", 202), ("POST", 202)]  # two beacons: 20 events, then 7
    # Loading sent nothing but the script's own request; then the one full batch.
    assert before_close == [
        ("GET", f"{live_server.url}/static/abacus/beacon.js"),
        ("POST", f"{live_server.url}{BEACON}?key={production.browser_key}"),
    ]


def test_fetch_from_an_allowed_origin_reads_the_answer_through_cors(
    browser, live_server, project, metrics, sites
):
    """A JSON fetch needs a preflight: abacus answers it for the allowed origin, and the page
    reads the 202."""
    allowed, _ = sites
    production = project.environments.get(key="production")
    environment_browser_update(environment=production, origins=[allowed.origin], enabled=True)
    unit = f"u-{uuid.uuid4().hex[:8]}"
    context, page, _ = open_page(browser, allowed, live_server, production.browser_key, unit)
    answer = page.evaluate(
        """async ([url, unit]) => {
            const body = {events: [{event_id: crypto.randomUUID(), type: "metric",
                name: "purchase", unit_id: unit, timestamp: new Date().toISOString()}]};
            const r = await fetch(url, {method: "POST", body: JSON.stringify(body),
                headers: {"Content-Type": "application/json"}, credentials: "omit"});
            return [r.status, await r.json()];
        }""",
        [f"{live_server.url}{BEACON}?key={production.browser_key}", unit + "-fetch"],
    )
    context.close()
    assert answer[0] == 202 and answer[1]["accepted"] == 1


def test_page_of_an_origin_not_allowed_is_refused(
    browser, live_server, project, metrics, sites, answered
):
    """The same page from another origin: its beacons are answered 403 and store nothing, and
    a fetch cannot even read the refusal (no CORS headers for that origin)."""
    allowed, other = sites
    running_experiment(project)
    production = project.environments.get(key="production")
    environment_browser_update(environment=production, origins=[allowed.origin], enabled=True)
    unit = f"u-{uuid.uuid4().hex[:8]}"

    context, page, _ = open_page(browser, other, live_server, production.browser_key, unit)
    assert wait_for(lambda: answered == [("POST", 403)])  # the batch of 20, refused
    fetched = page.evaluate(
        """async (url) => {
            try { await fetch(url, {method: "POST", body: "{}"}); return "read"; }
            catch (e) { return "blocked"; }
        }""",
        f"{live_server.url}{BEACON}?key={production.browser_key}",
    )
    page.close()
    assert wait_for(lambda: len(answered) == 3)  # fetch's POST, then the page's last beacon
    context.close()
    assert fetched == "blocked"
    assert answered == [("POST", 403)] * 3
    assert stored(unit) == 0
