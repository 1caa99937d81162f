"""On Redis, the serving generation pushed to each process and the rate counts sent in batches,
so that a returning unit's request makes no cache round trip of its own (core/cache.py has
the generation's rules; experiments/auth.py the rate limit).

One daemon thread per process, started by the first request that needs it (so after gunicorn's
fork), holds a subscription to the generation's channel:

- When it subscribes it reads the generation (so a change published before is not missed),
  then takes every new token published by `publish` as it arrives and acknowledges it. The
  process that made a change waits, when its transaction commits, until every subscribed
  process has acknowledged the new token (at most ``ACK_WAIT_SECONDS``): once a change's
  request has answered, every process serves the change. The thread reads the generation
  again every ``RECHECK_SECONDS``, so a lost message or a silently dead connection costs at
  most that long.
- Every ``FLUSH_SECONDS`` it adds the process's rate counts to the shared counters in one
  pipeline and keeps the totals Redis answers. A key's first count in a process, and its first
  after ``STALE_SECONDS`` without one there, is a round trip (so the process starts from the
  others' total); after it, a request's count is the last total plus what the process counted
  since (`count`): exact within a process; across processes a busy counter may lag by what the
  others counted in the last ``STALE_SECONDS``, so a limit of L a minute may let through L plus
  that much.

While the thread is not subscribed (starting, Redis unreachable, another cache) `token` and
`count` answer None and the callers make their round trip per request as before.
"""

import logging
import os
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0
FLUSH_SECONDS = 0.1
STALE_SECONDS = 2 * FLUSH_SECONDS  # a total older than this (the key idle here) is read again
ACK_WAIT_SECONDS = 0.2
RETRY_SECONDS = 1.0
ACK_TTL = 60


class _Feed:
    """The subscription of one process to the channel named ``key``: the generation's full key
    in the cache (with the cache's key prefix), which is also where the token is stored."""

    def __init__(self, backend: Any, key: str, create: Any) -> None:
        self.backend, self.key, self.create = backend, key, create
        self.pid = os.getpid()
        self.token: str | None = None  # None: not subscribed, callers take the slow path
        self.changes = 0  # tokens taken from messages or this process's changes
        self.lock = threading.Lock()
        self.pending: dict[str, tuple[int, int]] = {}  # key -> (counts not sent, timeout)
        self.sending: dict[str, int] = {}
        self.totals: dict[str, tuple[int, float]] = {}  # key -> (Redis's total, when)
        self.stopped = False
        self.pubsub: Any = None
        self.thread = threading.Thread(target=self._run, name="serving-feed", daemon=True)
        self.thread.start()

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self.stopped:
            try:
                self._subscribed()
            except Exception as exc:  # noqa: BLE001 - any failure: slow path, then try again
                if self.token is not None:
                    logger.warning("serving feed: %s; asking the cache per request", exc)
                self._down()
                time.sleep(RETRY_SECONDS)

    def _subscribed(self) -> None:
        client = self.backend._cache.get_client(self.key, write=True)  # noqa: SLF001
        pubsub = self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.key)
            self._read(client)
            checked = flushed = time.monotonic()
            while not self.stopped:
                message = pubsub.get_message(timeout=FLUSH_SECONDS)
                if message is not None and message.get("type") == "message":
                    self._take(client, message["data"].decode())
                now = time.monotonic()
                if now - flushed >= FLUSH_SECONDS:
                    self._flush(client)
                    flushed = now
                if now - checked >= RECHECK_SECONDS:
                    self._read(client)
                    checked = now
        finally:
            pubsub.close()

    def _read(self, client: Any) -> None:
        changes = self.changes
        raw = client.get(self.key)
        if raw is None:  # never set, or evicted: start one (as core.cache.generation does)
            self.create()
            raw = client.get(self.key)
        if raw is None:
            raise ConnectionError("the generation cannot be kept")
        if changes == self.changes:  # else a newer token came meanwhile: keep it
            self.token = str(self.backend._cache._serializer.loads(raw))  # noqa: SLF001

    def _take(self, client: Any, token: str) -> None:
        self.changes += 1
        self.token = token
        pipe = client.pipeline(transaction=False)
        pipe.incr(_ack_key(self.key, token))
        pipe.expire(_ack_key(self.key, token), ACK_TTL)
        pipe.execute()

    def _flush(self, client: Any) -> None:
        with self.lock:
            sending, self.pending = self.pending, {}
            self.sending = {key: n for key, (n, _) in sending.items()}
        if sending:
            pipe = client.pipeline(transaction=False)
            for key, (n, timeout) in sending.items():
                pipe.set(key, 0, ex=timeout, nx=True)
                pipe.incrby(key, n)
            answers = pipe.execute()
            now = time.monotonic()
            with self.lock:
                for i, key in enumerate(sending):
                    self.totals[key] = (int(answers[2 * i + 1]), now)
                self.sending = {}
        cutoff = time.monotonic() - 3 * 60
        with self.lock:
            for key in [k for k, (_, at) in self.totals.items() if at < cutoff]:
                del self.totals[key]

    def _down(self) -> None:
        self.token = None
        with self.lock:  # counts not sent are dropped: the limiter fails open
            self.pending, self.sending, self.totals = {}, {}, {}

    # --- the request's side ---------------------------------------------------------------------

    def count(self, key: str, timeout: int) -> int | None:
        with self.lock:
            total, at = self.totals.get(key, (0, None))
            if at is None or time.monotonic() - at > STALE_SECONDS:
                return None  # first count here, or idle since: the caller's round trip
            n, _ = self.pending.get(key, (0, timeout))
            self.pending[key] = (n + 1, timeout)
            return total + self.sending.get(key, 0) + n + 1

    def seen(self, key: str, total: int) -> None:
        with self.lock:
            known, _ = self.totals.get(key, (0, 0.0))
            self.totals[key] = (max(known, total), time.monotonic())


_feed: _Feed | None = None
_start_lock = threading.Lock()


def _ack_key(key: str, token: str) -> str:
    return f"{key}:ack:{token}"


def _current(backend: Any, key: str, create: Any) -> _Feed | None:
    """This process's feed for ``key`` (started when missing, after a fork, or when the key
    changed: another cache or key prefix); None until it is subscribed."""
    global _feed
    feed = _feed
    if feed is None or feed.key != key or feed.pid != os.getpid():
        with _start_lock:
            feed = _feed
            if feed is None or feed.key != key or feed.pid != os.getpid():
                if feed is not None:
                    feed.stopped = True
                feed = _feed = _Feed(backend, key, create)
    return feed if feed.token is not None else None


def token(backend: Any, key: str, create: Any) -> str | None:
    """The generation pushed to this process, or None (not subscribed: read it per request).
    ``create`` starts a generation when there is none."""
    feed = _current(backend, key, create)
    return feed.token if feed is not None else None


def count(backend: Any, generation_key: str, key: str, timeout: int, create: Any) -> int | None:
    """Count one under the full key ``key`` (living ``timeout`` seconds); this process's view
    of the total (module docstring). None when not subscribed, or for the key's first count in
    this process: the caller counts in Redis and hands the total to `seen`, so that the
    process's view starts from the other processes' counts, not from zero."""
    feed = _current(backend, generation_key, create)
    return feed.count(key, timeout) if feed is not None else None


def seen(key: str, total: int) -> None:
    """The total Redis answered for the full key ``key`` to a count made per request."""
    feed = _feed
    if feed is not None and feed.pid == os.getpid() and feed.token is not None:
        feed.seen(key, total)


def publish(backend: Any, key: str, token: str, value: bytes, wait: bool) -> None:
    """Store the new generation ``token`` (``value``: as the cache stores it) and push it to
    the subscribed processes, this one at once; with ``wait``, until all of them took it (at
    most ACK_WAIT_SECONDS). Raises the cache's error."""
    client = backend._cache.get_client(key, write=True)  # noqa: SLF001
    pipe = client.pipeline(transaction=False)
    pipe.set(key, value)
    pipe.publish(key, token)
    _, receivers = pipe.execute()
    feed = _feed
    if feed is not None and feed.key == key and feed.pid == os.getpid() and feed.token:
        feed.changes += 1
        feed.token = token
    if not wait or not receivers:
        return
    deadline = time.monotonic() + ACK_WAIT_SECONDS
    while time.monotonic() < deadline:
        acked = client.get(_ack_key(key, token))
        if acked is not None and int(acked) >= receivers:
            return
        time.sleep(0.0005)
    logger.warning(
        "serving feed: %s of %s processes took the change within %s s; the rest within %s s",
        int(client.get(_ack_key(key, token)) or 0),
        receivers,
        ACK_WAIT_SECONDS,
        RECHECK_SECONDS,
    )


def stop() -> None:
    """Stop this process's feed (tests)."""
    global _feed
    if _feed is not None:
        _feed.stopped = True
        _feed = None
