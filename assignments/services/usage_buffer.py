"""The evaluation counts of ``POST /evaluate``, buffered in process memory and written in bulk.

Writing each request's counts in the request cost a database write and a commit per
evaluation, and every request of an environment updated the same rows (one per flag served),
so requests queued on those rows' locks. Instead a request adds its counts to this process's
buffer, ``(flag id, environment id, variation, UTC day) -> (count, latest evaluation)``, under a
lock and without touching the database, and one background thread per process writes the
buffer with one set-based upsert (`flag_usage.flag_usage_upsert`):

- every ``ABACUS_USAGE_FLUSH_SECONDS`` (default 5), so "last evaluated" and the counts are at
  most that late;
- at once when the buffer holds `FLUSH_AT_KEYS` keys;
- at process exit (``atexit``: a gunicorn worker stopping, a management command ending).

A flush that fails (the database down) puts its counts back for the next one and never
reaches a request. While flushes fail the buffer grows to at most `MAX_KEYS` keys: counts of
further keys are dropped, and the next flush logs how many. A process that is killed (not
stopped) loses the counts of its last interval; counts are a hygiene signal (last evaluated,
stale flags), not events: tracked evaluations' exposures are stored in the request.

The thread starts with the first count a process buffers. A forked child starts with an empty
buffer and its own thread (its parent flushes its own counts).
"""

import atexit
import logging
import os
import threading
from collections.abc import Mapping
from datetime import date, datetime

from django.conf import settings
from django.db import close_old_connections, connection

from assignments.services.flag_usage import UsageKey, flag_usage_upsert

logger = logging.getLogger(__name__)

FLUSH_AT_KEYS = 10_000  # a buffer this large is flushed at once
MAX_KEYS = 50_000  # while flushes fail: counts of keys beyond this are dropped (about 15 MB)

Buffered = dict[UsageKey, tuple[int, datetime]]


class UsageBuffer:
    """One process's buffered evaluation counts and the thread that flushes them."""

    def __init__(self) -> None:
        self.background = True  # start the flusher thread with the first count
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()  # guards _counts and _dropped; never held for a query
        self._flushing = threading.Lock()  # one flush at a time
        self._counts: Buffered = {}
        self._dropped = 0
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def add(
        self,
        environment_id: int,
        counts: Mapping[tuple[int, str, date], tuple[int, datetime]],
    ) -> None:
        """Buffer one request's ``(flag id, variation, day) -> (count, latest)``."""
        with self._lock:
            for (flag_id, variation, day), (n, at) in counts.items():
                self._merge((flag_id, environment_id, variation, day), n, at)
            size = len(self._counts)
            if self.background and (self._thread is None or not self._thread.is_alive()):
                self._start()
        if size >= FLUSH_AT_KEYS:
            self._wake.set()

    def _merge(self, key: UsageKey, n: int, at: datetime) -> None:
        """Add to one key (the caller holds the lock); a new key past `MAX_KEYS` is dropped."""
        seen = self._counts.get(key)
        if seen is not None:
            self._counts[key] = (seen[0] + n, max(seen[1], at))
        elif len(self._counts) < MAX_KEYS:
            self._counts[key] = (n, at)
        else:
            self._dropped += n

    def pending(self) -> Buffered:
        """A copy of the counts waiting for the next flush."""
        with self._lock:
            return dict(self._counts)

    def flush(self) -> int:
        """Write the buffered counts in one statement; the number of keys written. On failure
        the counts go back into the buffer and the error is raised."""
        with self._flushing:
            with self._lock:
                taken, self._counts = self._counts, {}
                dropped, self._dropped = self._dropped, 0
            if dropped:
                logger.error(
                    "Flag usage: %d evaluation counts dropped; the buffer was full (%d keys) "
                    "while flushes failed.",
                    dropped,
                    MAX_KEYS,
                )
            try:
                flag_usage_upsert(taken)
            except BaseException:
                with self._lock:
                    for key, (n, at) in taken.items():
                        self._merge(key, n, at)
                raise
            return len(taken)

    def flush_logged(self) -> None:
        """`flush`, logging a failure instead of raising it (the thread and process exit)."""
        try:
            self.flush()
        except Exception:
            logger.exception("Flag usage: flush failed; its counts wait for the next one.")
            connection.close()  # reconnect on the next flush

    def stop(self) -> None:
        """End the flusher thread (without a last flush) and wait for it."""
        thread = self._thread
        self._stop = True
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self._stop = False
        self._wake.clear()

    def discard(self) -> None:
        """Forget the buffered counts (tests)."""
        with self._lock:
            self._counts, self._dropped = {}, 0

    def _start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="abacus-usage-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait(settings.ABACUS_USAGE_FLUSH_SECONDS)
                self._wake.clear()
                if self._stop:
                    return
                close_old_connections()  # this thread's own connection, as a request would
                self.flush_logged()
        finally:
            connection.close()


buffer = UsageBuffer()
os.register_at_fork(after_in_child=buffer._reset)
atexit.register(buffer.flush_logged)


def flag_usage_buffer(
    environment_id: int, counts: Mapping[tuple[int, str, date], tuple[int, datetime]]
) -> None:
    """Count evaluations of one environment: written by the next flush."""
    buffer.add(environment_id, counts)


def flag_usage_flush() -> int:
    """Write this process's buffered counts now (tests, the benchmark); the keys written."""
    return buffer.flush()
