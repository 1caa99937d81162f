"""Liveness and readiness endpoints for load balancers, monitoring and `make run`.

- `/healthz`: the web process is up and answering. Touches no dependency.
- `/readyz`: which dependencies this web process can reach. The database is required (without it
  no endpoint works): 503 when it is down. The broker is needed only to queue analyses, so
  assignment and ingestion keep working without it: the answer is then 200 with status
  "degraded" (503 with `?strict=1`, for monitoring that wants to page on it). The cache only
  counts rate limits, which fail open: reported, never fatal.

`/readyz` answers within a few milliseconds in every state, so a readiness probe with a 1 s
timeout never pulls a healthy web server out of rotation during a broker outage. The database is
checked inline (a `SELECT 1` on the process's own connection). The broker and the cache are
checked by `Probe`s: each remembers its last result for `FRESH_SECONDS`; an older result starts a
check in a background thread (with a short connect timeout), and the request waits at most
`WAIT_SECONDS` for it: a refused connection is known at once, and a check that hangs (a
black-holed host) reports `error: TimeoutError` once it has run for `TIMEOUT_SECONDS`, and the
last known result until then.
"""

import logging
import threading
import time
from collections.abc import Callable

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)
REQUIRED = ("database",)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


FRESH_SECONDS = 1.0  # a result younger than this is served as is
WAIT_SECONDS = 0.1  # the longest a request waits for a check it started
TIMEOUT_SECONDS = 1.0  # a check still running after this reads as a timeout


def _broker() -> None:
    from config.celery import app

    # One attempt, no retry loop (kombu's retries sleep for seconds between attempts).
    with app.connection_for_write(connect_timeout=TIMEOUT_SECONDS) as conn:
        conn.ensure_connection(max_retries=0, timeout=TIMEOUT_SECONDS)


def _cache() -> None:
    cache.set("abacus:readyz", "1", timeout=10)
    if cache.get("abacus:readyz") != "1":
        raise RuntimeError("value written was not read back")


def _run(name: str, check: Callable[[], None]) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        check()
        outcome = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        # The endpoint is public: the details (hosts, ports, users) go to the log only.
        logger.warning("readyz: %s unreachable: %s", name, exc)
        outcome = f"error: {type(exc).__name__}"
    return outcome, round((time.perf_counter() - started) * 1000, 1)


class Probe:
    """A dependency check whose result is cached and refreshed in the background."""

    def __init__(self, name: str, check: Callable[[], None]) -> None:
        self.name = name
        self.check = check
        self._lock = threading.Lock()
        self._result: tuple[str, float] | None = None
        self._checked_at = 0.0  # time.monotonic() of the last finished check
        self._started_at: float | None = None  # of the check in flight, if any
        self._done = threading.Event()
        self._generation = 0  # a reset makes the checks in flight irrelevant

    def reset(self) -> None:
        with self._lock:
            self._result, self._checked_at, self._started_at = None, 0.0, None
            self._generation += 1

    def _refresh(self, done: threading.Event, generation: int) -> None:
        result = _run(self.name, self.check)
        with self._lock:
            if generation == self._generation:
                self._result, self._checked_at, self._started_at = result, time.monotonic(), None
        done.set()

    def start(self) -> float:
        """Start a check unless the last result is fresh or one is running; returns when the
        check in flight (if any) started."""
        now = time.monotonic()
        with self._lock:
            if self._result is not None and now - self._checked_at < FRESH_SECONDS:
                return now
            if self._started_at is None:
                self._started_at, self._done = now, threading.Event()
                threading.Thread(
                    target=self._refresh,
                    args=(self._done, self._generation),
                    name=f"readyz-{self.name}",
                    daemon=True,
                ).start()
            return self._started_at

    def result(self, deadline: float) -> tuple[str, float]:
        """The freshest result available by ``deadline`` (a time.monotonic() value)."""
        with self._lock:
            done = self._done if self._started_at is not None else None
        if done is not None:
            done.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._started_at is None and self._result is not None:
                return self._result
            running = time.monotonic() - (self._started_at or time.monotonic())
            if self._result is None or running >= TIMEOUT_SECONDS:
                return "error: TimeoutError", round(running * 1000, 1)
            return self._result  # still checking: the last known answer, for up to a second


PROBES = {"broker": Probe("broker", _broker), "cache": Probe("cache", _cache)}


def _warm_up() -> None:
    """Import the broker's transport now (no I/O): otherwise the first check of a process
    spends its wait importing it, and the first answer reads as a timeout."""
    from config.celery import app

    try:
        app.connection_for_write().transport  # noqa: B018 - the property imports the module
    except Exception:  # noqa: BLE001 - a bad broker URL shows up in the check itself
        logger.debug("readyz: could not load the broker transport", exc_info=True)


_warm_up()


def readyz(request: HttpRequest) -> JsonResponse:
    deadline = time.monotonic() + WAIT_SECONDS
    for probe in PROBES.values():  # the checks run side by side, and beside the database's
        probe.start()
    results = {"database": _run("database", _database)}
    results.update({name: probe.result(deadline) for name, probe in PROBES.items()})
    failed = [name for name, (outcome, _) in results.items() if outcome != "ok"]
    strict = request.GET.get("strict") in {"1", "true", "yes"}
    if any(name in REQUIRED for name in failed) or (strict and failed):
        status, code = "unavailable", 503
    elif failed:
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    body: dict[str, object] = {"status": status}
    body.update({name: outcome for name, (outcome, _) in results.items()})
    body["failed"] = failed
    body["latency_ms"] = {name: ms for name, (_, ms) in results.items()}
    return JsonResponse(body, status=code)
