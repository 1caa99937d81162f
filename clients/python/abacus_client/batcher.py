"""The background batcher: a bounded in-memory queue of events and one thread that posts them
to ``POST /api/v1/events`` in batches.

Why it is built this way:
- ``put`` never blocks and never raises: a full queue drops one event (the oldest by default,
  or the new one) and counts it, so a slow or absent server can never slow the service down.
- A batch leaves when it holds ``batch_size`` events or its oldest event waited
  ``flush_interval`` seconds.
- Network errors, 5xx and 429 are retried with exponential backoff and full jitter (a random
  wait in ``[0, min(backoff_max, backoff_base * 2**attempt)]``; at least Retry-After when the
  server sends one). Each event keeps its ``event_id`` across retries, so a batch the server
  stored but whose answer was lost is counted as ``duplicates`` the second time, never twice.
- Other 4xx answers (a bad key, a malformed body) are not retried: the batch is dropped and
  counted (``dropped_rejected``); events the server rejects one by one are counted too.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import requests

logger = logging.getLogger("abacus_client")

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class EventBatcher:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        overflow: str = "drop_oldest",
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retries: int | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        sleep_random: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError("overflow must be 'drop_oldest' or 'drop_newest'")
        if batch_size < 1 or batch_size > 10_000:
            raise ValueError("batch_size must be between 1 and 10000 (the server's limit)")
        self.endpoint = url.rstrip("/") + "/api/v1/events"
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.overflow = overflow
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retries = max_retries
        self.timeout = timeout
        self._random = sleep_random
        self._own_session = session is None
        self._session = session or requests.Session()
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._oldest_at: float | None = None
        self._flush_requested = False
        self._closing = False
        self._deadline: float | None = None  # give up retrying after this (close's timeout)
        self.stats: dict[str, int] = collections.Counter()
        self._thread = threading.Thread(target=self._run, name="abacus-batcher", daemon=True)
        self._thread.start()

    # -- the caller's side: never blocks ------------------------------------------------------

    def put(self, event: dict[str, Any]) -> bool:
        """Queue one event; False when it was dropped (queue full with ``drop_newest``, or
        closed)."""
        with self._cond:
            if self._closing:
                self.stats["dropped_closed"] += 1
                return False
            if len(self._queue) >= self.max_queue:
                self.stats["dropped_overflow"] += 1
                if self.stats["dropped_overflow"] in (1, 10, 100) or not (
                    self.stats["dropped_overflow"] % 1000
                ):
                    logger.warning(
                        "abacus event queue full (%d): %d events dropped so far",
                        self.max_queue,
                        self.stats["dropped_overflow"],
                    )
                if self.overflow == "drop_newest":
                    return False
                self._queue.popleft()
            if not self._queue:
                self._oldest_at = time.monotonic()
            self._queue.append(event)
            self.stats["queued"] += 1
            if len(self._queue) >= self.batch_size:
                self._cond.notify_all()
            return True

    def pending(self) -> int:
        """Events queued or in a batch being sent."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now and wait until it is sent (or dropped); True when nothing
        is left within ``timeout`` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while self._queue or self._in_flight:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 0.5)
            return True

    def close(self, timeout: float = 5.0) -> bool:
        """Stop accepting events, send what is queued for at most ``timeout`` seconds, then stop
        the thread. Events still unsent then are dropped and counted (``dropped_shutdown``).
        True when everything was sent."""
        with self._cond:
            if self._closing and not self._thread.is_alive():
                return not self._queue
            dropped_before = self.stats["dropped_shutdown"]
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        if self._own_session and not self._thread.is_alive():
            self._session.close()  # no kept-alive connection outlives the client
        with self._cond:
            left = len(self._queue) + self._in_flight
            if left:
                logger.warning("abacus client closed with %d unsent events (dropped)", left)
            return left == 0 and self.stats["dropped_shutdown"] == dropped_before

    # -- the thread ---------------------------------------------------------------------------

    def _take(self) -> list[dict[str, Any]] | None:
        """The next batch, waiting until one is due; None when closing with nothing left."""
        with self._cond:
            while True:
                if self._queue:
                    waited = time.monotonic() - (self._oldest_at or 0.0)
                    if (
                        len(self._queue) >= self.batch_size
                        or waited >= self.flush_interval
                        or self._flush_requested
                        or self._closing
                    ):
                        break
                    self._cond.wait(self.flush_interval - waited)
                    continue
                self._flush_requested = False
                if self._closing:
                    return None
                self._cond.wait(0.5)
            n = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._oldest_at = time.monotonic() if self._queue else None
            self._in_flight = n
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._send(batch)
            except Exception:  # never let the thread die
                logger.exception("abacus batcher: unexpected error; batch dropped")
                self.stats["dropped_failed"] += len(batch)
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _give_up(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _send(self, batch: list[dict[str, Any]]) -> None:
        attempt = 0
        if self._give_up():
            self.stats["dropped_shutdown"] += len(batch)
            return
        while True:
            retry_after = None
            try:
                response = self._session.post(
                    self.endpoint, json={"events": batch}, headers=self._headers,
                    timeout=self.timeout,
                )  # fmt: skip
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    self._record(batch, response)
                    return
                if response.status_code not in RETRY_STATUSES:
                    self.stats["dropped_rejected"] += len(batch)
                    logger.error(
                        "abacus refused a batch of %d events (%d): %s",
                        len(batch), response.status_code, response.text[:500],
                    )  # fmt: skip
                    return
                problem = f"HTTP {response.status_code}"
                retry_after = _retry_after(response.headers.get("Retry-After"))
            attempt += 1
            self.stats["retries"] += 1
            if self._give_up() or (self.max_retries is not None and attempt > self.max_retries):
                self.stats["dropped_shutdown" if self._give_up() else "dropped_failed"] += len(
                    batch
                )
                logger.error("abacus batch of %d events dropped after %s", len(batch), problem)
                return
            cap = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            wait = self._random(0.0, cap)
            if retry_after is not None:
                wait = max(wait, min(retry_after, self.backoff_max))
            logger.info("abacus batch of %d events: %s; retry in %.2f s", len(batch), problem, wait)
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        """Wait, but no later than close's deadline."""
        end = time.monotonic() + seconds
        with self._cond:
            while True:
                now = time.monotonic()
                if self._deadline is not None:
                    end = min(end, self._deadline)
                if now >= end:
                    return
                self._cond.wait(end - now)

    def _record(self, batch: list[dict[str, Any]], response: requests.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {}
        self.stats["sent"] += len(batch)
        self.stats["accepted"] += int(body.get("accepted", 0))
        self.stats["duplicates"] += int(body.get("duplicates", 0))
        rejected = body.get("rejected") or []
        if rejected:
            self.stats["rejected"] += len(rejected)
            logger.warning("abacus rejected %d events, e.g. %s", len(rejected), rejected[:3])


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (a number or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
