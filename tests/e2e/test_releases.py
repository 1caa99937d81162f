"""End to end: guarded releases under a real worker, with a simulated service behind the flag.

Real gunicorn, Celery worker and beat as subprocesses (config/processes.py) on the test database
and a real broker (Redis when CELERY_BROKER_URL names one, else the filesystem transport); the
beat's `releases.tick` runs every second and each release is analysed every 2 seconds.

A service thread in this process plays the application behind the flag: every 0.5 s it refreshes
the environment's payload from /api/features/<client key> with the official `growthbook` SDK,
evaluates the flag for 100 fresh units exactly as a service would, and posts through
POST /api/v1/events (a service key with the ingest and evaluate scopes) each unit's flag
exposure, 5 `request` events, an `error` event per request with probability p, and a
`latency_ms` value per request. A watcher thread polls the payload every 0.1 s (conditional
GETs, 304 until the flag changes), evaluates 400 probe units with the SDK at each new payload,
and records when the share served the new variation changed.

- **Harmful**: the new variation raises the error rate by 30% (p = 0.05 -> 0.065 per request).
  The monitor rolls it back on its own; the SDK serves the baseline to every unit afterwards;
  the transition is by "monitor" naming the error metric; Slack (a local receiver) and email
  (Django's file backend in the worker) were sent. The time to rollback, from the first harmful
  event posted to the SDK serving the baseline, is printed (`pytest -s`) and bounded.
- **Harmless**: identical rates and latencies over steps 10%, 50%, 100%: every step passes, the
  release completes, the flag's default becomes the new variation for everyone, and the
  step-advanced and completed notifications were sent.

How many units the harmful test needs (docs/releases.md "End-to-end"): the error metric is a
ratio (errors per request), so its information is per request. A fixed-horizon one-sided test at
level 0.025 (alpha 0.05 over 1 step x 2 metrics) with 80% power needs per side
n = 2 (1.96 + 0.84)^2 p(1 - p) / d^2 = 2 x 7.84 x 0.0535 / 0.015^2 ~ 3,700 requests; the
confidence sequence (always valid under the monitor's peeking every 2 s) costs a factor of ~2,
so ~7,500 requests, i.e. ~1,500 units per side with 5 requests each, ~3,000 units in all at a
50% split: about 15 s of this service's 200 units/s. A Monte Carlo of the monitor's own test
(``releases.policy.check_metric``, a look every 450 units) puts the units at the rollback at a
median of 2,250, 90th percentile 3,600, 99th 5,400. The step's `min_units` (3,000) tunes the
sequence (``Plan.tuning_n`` = 2 x min_units) to be tightest there; its `min_minutes` (10) keeps
the step from advancing during the test.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import requests
from growthbook import GrowthBook

from experiments.models import Environment
from experiments.services import api_key_create, metric_create, project_create
from flags.models import FlagEnvironment
from flags.services import flag_create, flag_environment_update
from notifications.models import DeliveryStatus, NotificationDelivery
from notifications.services import notification_channel_create, notification_preference_set
from releases.models import Release, ReleaseCheck, ReleaseStatus, ReleaseTransition
from releases.services import release_create
from tests.e2e.test_flow import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FLAG = "new-checkout"
BASELINE, NEW = "off", "on"
VARIATION_OF = {False: BASELINE, True: NEW}  # the boolean flag's values -> variation keys
ERROR_RATE = 0.05  # per request, on the baseline
HARM = 1.3  # the harmful variation's error rate is 30% higher
REQUESTS_PER_UNIT = 5
UNITS_PER_BATCH = 100
BATCH_SECONDS = 0.5
WATCH_SECONDS = 0.1
# The SDK refetches a payload older than its cache_ttl at each evaluation: long, so it fetches
# only when told to (`load_features(force_refresh=True)`, once a batch).
SDK_CACHE_TTL = 3600
INTERVAL_SECONDS = 2  # each release's analysis_interval_seconds
ROLLBACK_TIMEOUT = 180.0
TIME_TO_ROLLBACK_BOUND = 90.0
METRICS = {
    "errors": "Errors per request",
    "latency": "Latency p95",
}


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module")
def stack(django_db_setup, mail_dir):
    """One stack for the module (the tests flush the database between them, the processes
    reconnect): tick every second, releases analysable every 2 s, the local Slack receiver
    allow-listed, email written to files."""
    env = {
        "ABACUS_RELEASE_TICK_SECONDS": "1",
        "ABACUS_RELEASE_MIN_INTERVAL_SECONDS": str(INTERVAL_SECONDS),
        "ABACUS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "ABACUS_WEBHOOK_RETRY_SECONDS": "1",
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
    }
    with running_stack(beat=True, env=env) as running:
        yield running


@pytest.fixture
def slack(settings):
    """A local Slack-compatible incoming webhook: records each message (parsed JSON)."""
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]  # the channel's URL check, here
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX"
    yield SimpleNamespace(url=url, received=received)
    server.shutdown()
    server.server_close()


@pytest.fixture
def world(django_user_model, settings, slack):
    """A project with a boolean flag on in production serving "off", the two health metrics,
    a service key, a Slack channel and the admin's email preference (every event)."""
    settings.ABACUS_RELEASE_MIN_INTERVAL_SECONDS = INTERVAL_SECONDS  # as the processes have it
    admin = django_user_model.objects.create_user("alice", "alice@example.com", "pw-alice-123")
    project = project_create(slug=f"shop-{uuid.uuid4().hex[:6]}", name="Shop", owner=admin)
    production = Environment.objects.get(project=project, key="production")
    key = api_key_create(project=project, name="checkout", scopes=["ingest", "evaluate"]).secret
    metric_create(
        project=project, key="error-rate", name=METRICS["errors"], kind="ratio",
        event_name="error", denominator_event="request", direction="decrease",
    )  # fmt: skip
    metric_create(
        project=project, key="latency-p95", name=METRICS["latency"], kind="quantile",
        event_name="latency_ms", direction="decrease", quantile=0.95,
    )  # fmt: skip
    flag = flag_create(project=project, key=FLAG, name="New checkout", actor=admin)
    flag_environment_update(
        flag=flag, environment=production, actor=admin, enabled=True, default_variation=BASELINE
    )
    notification_channel_create(
        project=project, kind="slack", name="#releases", target=slack.url, actor=admin
    )
    notification_preference_set(user=admin, project=project, email=True)
    return SimpleNamespace(
        admin=admin, project=project, production=production, flag=flag, key=key,
        client_key=production.client_key,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def quiet_sdk():
    """The SDK's debug chatter, and urllib3's notes on its pooled connections."""
    loggers = [logging.getLogger(name) for name in ("growthbook", "urllib3.connectionpool")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


class Service(threading.Thread):
    """The application behind the flag (module docstring). ``error_rate`` per variation."""

    def __init__(self, base: str, world, error_rate: dict[str, float], seed: int) -> None:
        super().__init__(daemon=True, name="simulated-service")
        self.base, self.error_rate = base, error_rate
        self.sdk = GrowthBook(api_host=base, client_key=world.client_key, cache_ttl=SDK_CACHE_TTL)
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {world.key}"
        self.rng = np.random.default_rng(seed)
        self.halt = threading.Event()
        self.served: dict[str, str] = {}  # unit -> variation
        self.batches: list[tuple[float, Counter]] = []  # (evaluated at, variations served)
        self.first_harm: float | None = None  # when the first new-variation error was posted
        self.problems: list[str] = []
        self.units = 0

    def run(self) -> None:
        due = time.monotonic()
        while not self.halt.is_set():
            try:
                self.batch()
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.problems.append(repr(exc))
            due += BATCH_SECONDS
            self.halt.wait(max(0.0, due - time.monotonic()))

    def batch(self) -> None:
        evaluated = time.time()
        self.sdk.load_features(force_refresh=True)  # 304 unless the flag changed (ETag)
        events, served, harmful = [], Counter(), False
        for _ in range(UNITS_PER_BATCH):
            unit = f"u{self.units}"
            self.units += 1
            self.sdk.set_attributes({"id": unit})
            variation = VARIATION_OF[self.sdk.eval_feature(FLAG).value]
            self.served[unit] = variation
            served[variation] += 1
            events.append(
                {"event_id": uuid.uuid4().hex, "type": "exposure", "flag": FLAG,
                 "variation": variation, "unit_id": unit, "timestamp": evaluated}
            )  # fmt: skip
            at = evaluated + 0.001  # the unit's requests, just after its exposure
            for _ in range(REQUESTS_PER_UNIT):
                events.append(self.metric("request", unit, 1.0, at))
                latency = float(self.rng.lognormal(np.log(120.0), 0.5))
                events.append(self.metric("latency_ms", unit, latency, at))
                if self.rng.random() < self.error_rate[variation]:
                    events.append(self.metric("error", unit, 1.0, at))
                    harmful = harmful or variation == NEW
        posted = time.time()
        r = self.http.post(f"{self.base}/api/v1/events", json={"events": events}, timeout=30)
        if r.status_code != 202 or r.json()["rejected"]:
            self.problems.append(f"events: {r.status_code} {r.text[:300]}")
            return
        if harmful and self.first_harm is None:
            self.first_harm = posted
        self.batches.append((evaluated, served))

    @staticmethod
    def metric(name: str, unit: str, value: float, at: float) -> dict:
        return {"event_id": uuid.uuid4().hex, "type": "metric", "name": name, "unit_id": unit,
                "value": value, "timestamp": at}  # fmt: skip

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


class Watcher(threading.Thread):
    """An SDK client polling the payload every 0.1 s (a conditional GET, as the SDK's own
    refresh does: 304 until the flag changes) and, at each new payload, the share of 400 probe
    units its `growthbook` SDK serves the new variation."""

    PROBES = [f"probe-{i}" for i in range(400)]

    def __init__(self, base: str, client_key: str) -> None:
        super().__init__(daemon=True, name="sdk-watcher")
        self.url = f"{base}/api/features/{client_key}"
        self.http = requests.Session()
        self.sdk = GrowthBook(attributes={}, features={})
        self.halt = threading.Event()
        self.timeline: list[tuple[float, float]] = []  # (payload received, share served new)

    def share(self) -> float:
        return served_by(self.sdk, self.PROBES)[NEW] / len(self.PROBES)

    def run(self) -> None:
        tag = ""
        while not self.halt.is_set():
            try:
                r = self.http.get(self.url, headers={"If-None-Match": tag}, timeout=10)
            except requests.RequestException:
                r = None
            if r is not None and r.status_code == 200:
                received = time.time()
                tag = r.headers["ETag"]
                self.sdk.set_features(r.json()["features"])
                share = self.share()
                if not self.timeline or self.timeline[-1][1] != share:
                    self.timeline.append((received, share))
            self.halt.wait(WATCH_SECONDS)

    def first(self, condition, after: float = 0.0) -> float | None:  # noqa: ANN001
        return next((t for t, share in self.timeline if t >= after and condition(share)), None)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


def fresh_sdk(base: str, client_key: str) -> GrowthBook:
    sdk = GrowthBook(api_host=base, client_key=client_key, cache_ttl=SDK_CACHE_TTL)
    sdk.load_features(force_refresh=True)
    return sdk


def served_by(sdk: GrowthBook, units) -> Counter:  # noqa: ANN001
    counts = Counter()
    for unit in units:
        sdk.set_attributes({"id": unit})
        counts[VARIATION_OF[sdk.eval_feature(FLAG).value]] += 1
    return counts


def wait_until(condition, timeout: float, what: str, logs: Path, interval: float = 0.25):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    worker = (logs / "worker.log").read_text()[-6000:]
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{worker}")


def release_in(world, *, steps, metrics, **kw) -> Release:
    """A release starting a second from now: the beat's tick starts it in the worker, so every
    notification, from `release.started` on, is sent by the real processes."""
    start_at = datetime.fromtimestamp(time.time() + 1.0, UTC)
    return release_create(
        project=world.project, flag=world.flag, environment=world.production, variation=NEW,
        steps=steps, metrics=metrics, analysis_interval_seconds=INTERVAL_SECONDS,
        start_at=start_at, actor=world.admin, **kw,
    )  # fmt: skip


def slack_titles(slack) -> list[str]:  # noqa: ANN001
    return [message["text"] for message in slack.received]


def emails(mail_dir: Path, slug: str) -> list[EmailMessage]:
    """The messages Django's file backend wrote (one file per connection, messages separated by
    a line of 79 dashes) about this project."""
    found = []
    for path in sorted(mail_dir.iterdir()):
        for chunk in path.read_bytes().split(b"-" * 79):
            if chunk.strip():
                message = email.message_from_bytes(chunk.strip(), policy=email.policy.default)
                if subject(message).startswith(f"[abacus {slug}]"):
                    found.append(message)
    return found


def subject(message: EmailMessage) -> str:
    return " ".join(str(message["Subject"]).split())


def sent(project, event: str) -> list[NotificationDelivery]:  # noqa: ANN001
    return list(NotificationDelivery.objects.filter(project=project, event=event))


def test_a_harmful_release_is_rolled_back_by_the_monitor(stack, world, slack, mail_dir):
    base, logs = stack
    rates = {BASELINE: ERROR_RATE, NEW: ERROR_RATE * HARM}
    service = Service(base, world, rates, seed=15)
    watcher = Watcher(base, world.client_key)
    service.start()
    watcher.start()
    try:
        release = release_in(
            world,
            steps=[{"percent": 50, "min_minutes": 10, "min_units": 3000}],
            metrics=[
                {"metric": "error-rate"},
                # 5% slower p95 is tolerated: identical latencies never decide this test.
                {"metric": "latency-p95", "non_inferiority_margin": 0.05},
            ],
        )
        wait_until(
            lambda: Release.objects.get(pk=release.pk).status == ReleaseStatus.ROLLED_BACK,
            ROLLBACK_TIMEOUT, "the monitor's rollback", logs,
        )  # fmt: skip
        seen_new = watcher.first(lambda share: share > 0)
        assert seen_new is not None, "the SDK never served the new variation"
        baseline_at = wait_until(
            lambda: watcher.first(lambda share: share == 0, after=seen_new),
            30, "the SDK payload serving the baseline", logs,
        )  # fmt: skip
        time.sleep(3 * BATCH_SECONDS)  # a few more batches of the service after the rollback
    finally:
        service.stop()
        watcher.stop()
    assert not service.problems, service.problems[:5]

    # The time to rollback: from the first harmful event posted (the first error of a unit served
    # the new variation) to the SDK's payload serving the baseline again. The evidence sufficed
    # between the cut-offs of the last check that held and of the one that decided.
    first_harm = service.first_harm
    assert first_harm is not None
    release.refresh_from_db()
    checks = list(ReleaseCheck.objects.filter(release=release).order_by("at", "id"))
    deciding = next(c for c in checks if c.action == "rollback")
    held = [c for c in checks if c.at < deciding.at]
    decided_at = deciding.at.timestamp()
    rolled_back_at = ReleaseTransition.objects.get(
        release=release, to_status=ReleaseStatus.ROLLED_BACK
    ).at.timestamp()
    total = baseline_at - first_harm
    previous = f" (the check before, at {held[-1].at.timestamp() - first_harm:.1f} s, held)"
    previous = previous if held else " (the first check)"
    times = [c.at.timestamp() for c in checks]
    cadence = float(np.mean(np.diff(times))) if len(times) > 1 else 0.0
    print(
        f"\ntime to rollback: {total:.1f} s from the first harmful event posted to the SDK "
        "serving the baseline\n"
        f"  evidence: sufficed at the cut-off of check {len(held) + 1}, "
        f"{decided_at - first_harm:.1f} s after the first harmful event{previous}, with "
        f"{deciding.units['baseline']} + {deciding.units['new']} units\n"
        f"  then {baseline_at - decided_at:.1f} s to the SDK (the analysis took "
        f"{deciding.elapsed_ms:.0f} ms; the rollback committed {rolled_back_at - decided_at:.1f} "
        "s after the cut-off)\n"
        f"  release started {release.started_at.timestamp() - first_harm:+.1f} s from the first "
        f"harmful event; {service.units} units simulated; checks every "
        f"{cadence:.1f} s taking "
        f"{np.mean([c.elapsed_ms for c in checks]):.0f} ms on average"
    )
    assert 0 < total < TIME_TO_ROLLBACK_BOUND
    assert first_harm < decided_at and baseline_at - decided_at < 4 * INTERVAL_SECONDS

    assert release.status == ReleaseStatus.ROLLED_BACK and release.finished_at is not None
    # The transition: by the monitor, naming the error metric.
    last = ReleaseTransition.objects.filter(release=release).last()
    assert last.to_status == ReleaseStatus.ROLLED_BACK and last.actor_label == "monitor"
    assert last.actor is None and METRICS["errors"] in last.reason, last.reason
    harmed = {m["key"]: m["harmed"] for m in deciding.metrics}
    assert harmed == {"error-rate": True, "latency-p95": False}, deciding.metrics

    # The flag serves the baseline again: the environment's default, no release rule, and the
    # SDK serves it to every unit, those served the new variation before included.
    config = FlagEnvironment.objects.get(flag=world.flag, environment=world.production)
    assert config.default_variation == BASELINE and config.rules == []
    units = list(service.served)
    assert Counter(service.served.values())[NEW] > 100
    assert served_by(fresh_sdk(base, world.client_key), units + Watcher.PROBES) == {
        BASELINE: len(units) + len(Watcher.PROBES)
    }
    # ... and so did the service, from the first batch evaluated after the payload changed.
    after = [served for evaluated, served in service.batches if evaluated > baseline_at + 0.2]
    assert after and all(set(served) == {BASELINE} for served in after)

    # Notifications: Slack (the local receiver) and the admin's email.
    title = f"Release {release.pk} of {FLAG} in production: rolled back"
    wait_until(lambda: title in " ".join(slack_titles(slack)), 60, "the Slack message", logs)
    message = next(m for m in slack.received if m["text"].startswith(title))
    assert METRICS["errors"] in message["text"]
    assert f"/p/{world.project.slug}/releases/{release.pk}/" in message["text"]
    mails = wait_until(
        lambda: [m for m in emails(mail_dir, world.project.slug) if subject(m).endswith(title)],
        60, "the rollback email", logs,
    )  # fmt: skip
    assert mails[0]["To"] == "alice@example.com"
    assert METRICS["errors"] in mails[0].get_content()
    deliveries = wait_until(
        lambda: [d for d in sent(world.project, "release.rolled_back")
                 if d.status == DeliveryStatus.SENT],
        30, "both rollback deliveries sent", logs,
    )  # fmt: skip
    assert sorted(d.kind for d in deliveries) == ["email", "slack"]


def test_a_harmless_release_completes_every_step(stack, world, slack, mail_dir):
    base, logs = stack
    service = Service(base, world, {BASELINE: ERROR_RATE, NEW: ERROR_RATE}, seed=16)
    watcher = Watcher(base, world.client_key)
    service.start()
    watcher.start()
    steps = [
        {"percent": 10, "min_minutes": 0, "min_units": 200},
        {"percent": 50, "min_minutes": 0, "min_units": 200},
        {"percent": 100, "min_minutes": 0, "min_units": 200},
    ]
    try:
        release = release_in(
            world,
            steps=steps,
            # Tolerated harm (non-inferiority): an A/A release is not rolled back by chance.
            metrics=[
                {"metric": "error-rate", "non_inferiority_margin": 0.1},
                {"metric": "latency-p95", "non_inferiority_margin": 0.05},
            ],
        )
        wait_until(
            lambda: Release.objects.get(pk=release.pk).status
            in (ReleaseStatus.COMPLETED, ReleaseStatus.ROLLED_BACK, ReleaseStatus.FAILED),
            ROLLBACK_TIMEOUT, "the release to finish", logs,
        )  # fmt: skip
        everyone_at = wait_until(
            lambda: watcher.first(lambda share: share == 1.0), 30, "the SDK serving 'on'", logs
        )
    finally:
        service.stop()
        watcher.stop()
    assert not service.problems, service.problems[:5]

    release.refresh_from_db()
    assert release.status == ReleaseStatus.COMPLETED, release.decision
    moves = [
        (t.from_status, t.to_status, t.to_step, t.actor_label)
        for t in ReleaseTransition.objects.filter(release=release)
    ]
    assert moves == [
        ("", "scheduled", 0, "alice"),
        ("scheduled", "running", 0, "monitor"),
        ("running", "running", 1, "monitor"),
        ("running", "running", 2, "monitor"),
        ("running", "completed", 2, "monitor"),
    ]
    checks = list(ReleaseCheck.objects.filter(release=release))
    decisions = {(c.step, c.action) for c in checks}
    assert {(0, "advance"), (1, "advance"), (2, "complete")} <= decisions
    assert not any(c.action == "rollback" for c in checks)
    assert [c.percent for c in checks if c.action != "hold"] == [10.0, 50.0, 100.0]
    # The SDK saw every step's share on the way (the probes' shares near 10% and 50%).
    shares = [share for _, share in watcher.timeline]
    assert any(0.04 < s < 0.2 for s in shares) and any(0.4 < s < 0.6 for s in shares)

    # The new variation is the environment's default, the release's rule is gone, and the SDK
    # serves it to everyone.
    config = FlagEnvironment.objects.get(flag=world.flag, environment=world.production)
    assert config.default_variation == NEW and config.rules == []
    units = list(service.served)
    assert served_by(fresh_sdk(base, world.client_key), units + Watcher.PROBES) == {
        NEW: len(units) + len(Watcher.PROBES)
    }

    # Notifications: two steps advanced, then completed, on Slack and by email.
    prefix = f"Release {release.pk} of {FLAG} in production:"
    slug = world.project.slug
    wanted = {f"{prefix} step advanced": 2, f"{prefix} completed": 1}

    def counted(titles: list[str]) -> dict[str, int]:
        return {title: sum(t.startswith(title) for t in titles) for title in wanted}

    wait_until(lambda: counted(slack_titles(slack)) == wanted, 60, "the Slack messages", logs)
    wait_until(
        lambda: counted([subject(m).split("] ", 1)[1] for m in emails(mail_dir, slug)]) == wanted,
        60, "the step and completion emails", logs,
    )  # fmt: skip
    for event, count in (("release.step_advanced", 2), ("release.completed", 1)):
        deliveries = wait_until(
            lambda event=event: [d for d in sent(world.project, event)
                                 if d.status == DeliveryStatus.SENT],
            30, f"{event} deliveries sent", logs,
        )  # fmt: skip
        assert Counter(d.kind for d in deliveries) == {"slack": count, "email": count}
    took = everyone_at - release.started_at.timestamp()
    print(
        f"\nharmless release: 10% -> 50% -> 100% -> completed in {took:.1f} s "
        f"({len(checks)} checks, {service.units} units simulated)"
    )
