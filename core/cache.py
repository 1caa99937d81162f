"""What abacus keeps in Django's shared cache (``CACHES["default"]``): the serving generation,
which invalidates every process's caches of the serving paths at once, the per-process caches
it validates (`ProcessCache`), and counters in fixed windows (the per-key rate limit).

**The serving generation** is one token in the shared cache. A change to anything the serving
paths cache (API keys, projects, environments, experiments, variants, segments, flags: every
model of the apps that call `invalidate_on_save`) replaces it, once when the row is saved and
again when the transaction commits (`serving_changed`). A process serving a request takes the
token once (remembered for the rest of the request: on Redis pushed to the process by its
subscription, core/serving_feed.py, else one cache round trip) and trusts an entry
of its own caches only if the entry was checked under that same token and less than
``ABACUS_SERVING_RECHECK_SECONDS`` ago; otherwise it asks the database again (a version query,
or the row itself). The commit-time replacement is what makes this exact: a process that read
the database before the commit tagged its entry with the old token, so its next request looks
again. Processes share the token through the shared cache: Redis on several machines; the file
cache under ``var/`` on one machine; ``locmem://`` only for one process.

Bounded staleness: if the cache cannot be reached when a change commits, or a row changes
without a model save (a queryset ``update()``, raw SQL, a restored backup), no token changes;
every entry is still rechecked at least every ``ABACUS_SERVING_RECHECK_SECONDS`` (default 5).
While the cache is unreachable every request asks the database, as if nothing were cached, and
a process that saw the cache fail rechecks all its entries once it is back.
"""

import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from django.apps import AppConfig
from django.conf import settings
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from core import serving_feed

logger = logging.getLogger(__name__)

GENERATION_KEY = "serving:generation"
# After a cache error, skip the cache for this long instead of failing every request slowly.
RETRY_SECONDS = 5.0
# A request remembers the token it read for at most this long (SDK streams last minutes).
REQUEST_MEMO_SECONDS = 1.0
# The longest an entry is trusted without asking the database (ABACUS_SERVING_RECHECK_SECONDS).
RECHECK_SECONDS = 5.0

T = TypeVar("T")

_local = threading.local()
_down_until = 0.0
_failures = 0  # cache errors seen by this process: entries checked before one are rechecked


def _token() -> str:
    return secrets.token_hex(8)


def _cache_down(exc: Exception, doing: str) -> None:
    global _down_until, _failures
    _failures += 1
    _down_until = time.monotonic() + RETRY_SECONDS
    logger.warning("serving cache: %s failed (%s); asking the database instead", doing, exc)


def generation() -> str | None:
    """The current serving generation, or None when the shared cache cannot be reached (then
    nothing cached may be trusted). Read once per request; on Redis pushed to the process
    (core/serving_feed.py) when it is subscribed, so not read from the cache at all."""
    now = time.monotonic()
    memo = getattr(_local, "memo", None)
    if memo is not None and now - memo[1] < REQUEST_MEMO_SECONDS:
        return memo[0]
    if now < _down_until:
        return None
    value = _pushed()
    if value is None:
        try:
            value = cache.get(GENERATION_KEY)
            if value is None:  # never set, or evicted: start a new one (every entry rechecked)
                value = _start_generation()
        except Exception as exc:  # noqa: BLE001 - any cache failure: trust nothing, ask the db
            _cache_down(exc, "reading the generation")
            return None
    if value is None:
        return None
    value = f"{value}/{_failures}"
    if getattr(_local, "in_request", False):
        _local.memo = (value, now)
    return value


def _start_generation() -> str | None:
    """A generation when there is none (the first, or evicted); another process's if it won."""
    fresh = _token()
    return fresh if cache.add(GENERATION_KEY, fresh, timeout=None) else cache.get(GENERATION_KEY)


def _feed_on() -> bool:
    return bool(getattr(settings, "ABACUS_SERVING_FEED", True))


def _feed_backend() -> Any:
    """The Redis cache when the serving feed is on, else None."""
    return _redis_backend() if _feed_on() else None


def _pushed() -> str | None:
    """The generation the serving feed pushed to this process; None when there is no feed or
    it is not subscribed (then the caller reads the cache)."""
    backend = _feed_backend()
    if backend is None:
        return None
    return serving_feed.token(backend, backend.make_key(GENERATION_KEY), _start_generation)


def recheck_seconds() -> float:
    return float(getattr(settings, "ABACUS_SERVING_RECHECK_SECONDS", RECHECK_SECONDS))


def _replace_generation(wait: bool = False) -> None:
    """A new generation in the shared cache; with the serving feed, pushed to every process
    (``wait``: until they took it, at commit time)."""
    _local.memo = None
    if time.monotonic() < _down_until:
        logger.error(
            "serving cache: unreachable; other processes see this change within %s s",
            recheck_seconds(),
        )
        return
    token = _token()
    try:
        backend = _feed_backend()
        if backend is None:
            cache.set(GENERATION_KEY, token, timeout=None)
        else:
            key = backend.make_key(GENERATION_KEY)
            value = backend._cache._serializer.dumps(token)  # noqa: SLF001 - as Django's set
            serving_feed.publish(backend, key, token, value, wait)
    except Exception as exc:  # noqa: BLE001 - never fail a write for the cache
        _cache_down(exc, "replacing the generation")


def serving_changed() -> None:
    """Something the serving paths cache has changed: every process rechecks its entries.

    Now (so this transaction's own later reads, and tests inside one transaction, see it) and
    when the transaction commits (so a process that read the database in between rechecks;
    with the serving feed, the commit waits until every subscribed process took the change)."""
    _replace_generation()
    transaction.on_commit(_replace_generation_at_commit)


def _replace_generation_at_commit() -> None:
    _replace_generation(wait=True)


def _on_save(sender: type, **kwargs: Any) -> None:
    if kwargs.get("raw"):  # loaddata: no transaction of ours to follow
        _replace_generation()
        return
    serving_changed()


def invalidate_on_save(app_config: AppConfig) -> None:
    """Every save and delete of the app's models (the admin's and every service's) changes the
    serving generation. Called from the app's ``ready()``."""
    for model in app_config.get_models():
        uid = f"serving-cache-{model._meta.label}"
        post_save.connect(_on_save, sender=model, dispatch_uid=uid + "-save")
        post_delete.connect(_on_save, sender=model, dispatch_uid=uid + "-delete")


def _request_started(**kwargs: Any) -> None:
    _local.in_request = True
    _local.memo = None
    _local.counts = {}


def _request_finished(**kwargs: Any) -> None:
    _local.in_request = False
    _local.memo = None
    _local.counts = {}


request_started.connect(_request_started, dispatch_uid="serving-cache-request-started")
request_finished.connect(_request_finished, dispatch_uid="serving-cache-request-finished")


@dataclass
class _Entry:
    generation: str | None
    checked_at: float
    version: Any
    value: Any


class ProcessCache(Generic[T]):
    """Values kept in this process, trusted while the serving generation is unchanged and for
    at most ``ABACUS_SERVING_RECHECK_SECONDS``; otherwise checked against the database again.

    `get_versioned` asks a cheap version query and rebuilds only when the version changed;
    `get_loaded` loads the value again. Thread-safe; every instance is listed for `clear_all`.
    """

    instances: list["ProcessCache"] = []

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[Hashable, _Entry] = {}
        self._lock = threading.Lock()
        ProcessCache.instances.append(self)

    def _fresh(self, key: Hashable) -> tuple[_Entry | None, str | None, float, bool]:
        current = generation()
        now = time.monotonic()
        entry = self._entries.get(key)
        fresh = (
            entry is not None
            and current is not None
            and entry.generation == current
            and now - entry.checked_at < recheck_seconds()
        )
        return entry, current, now, fresh

    def get_versioned(
        self, key: Hashable, version: Callable[[], Hashable], build: Callable[[Any], T]
    ) -> T:
        """The value of ``key``: cached; else ``build(version())`` unless the version is the
        cached entry's."""
        entry, current, now, fresh = self._fresh(key)
        if fresh:
            return entry.value
        seen = version()  # after reading the generation: see the module docstring
        value = entry.value if entry is not None and entry.version == seen else build(seen)
        with self._lock:
            self._entries[key] = _Entry(current, now, seen, value)
        return value

    def get_loaded(self, key: Hashable, load: Callable[[], T | None]) -> T | None:
        """The value of ``key``: cached; else ``load()`` (a None is returned, never kept)."""
        entry, current, now, fresh = self._fresh(key)
        if fresh:
            return entry.value
        value = load()
        with self._lock:
            if value is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = _Entry(current, now, None, value)
        return value

    def peek(self, key: Hashable) -> T | None:
        """The value last kept for ``key``, however old (no check): for comparisons only."""
        entry = self._entries.get(key)
        return entry.value if entry is not None else None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @classmethod
    def clear_all(cls) -> None:
        """Forget every process cache (tests: a rolled-back database may reuse ids)."""
        _local.memo = None
        for instance in cls.instances:
            instance.clear()


# --- best effort: values any process may lose ------------------------------------------------


def shared_get_many(keys: list[str]) -> dict[str, Any]:
    """``cache.get_many`` on Redis (one round trip); {} for other caches and on any error."""
    if not keys or time.monotonic() < _down_until or _redis_backend() is None:
        return {}
    try:
        return cache.get_many(keys)
    except Exception as exc:  # noqa: BLE001 - a miss: the caller asks the database
        _cache_down(exc, "reading")
        return {}


def shared_set_many(values: dict[str, Any], timeout: int) -> None:
    """``cache.set_many`` on Redis (one round trip); nothing for other caches or on error."""
    if not values or time.monotonic() < _down_until or _redis_backend() is None:
        return
    try:
        cache.set_many(values, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - not kept: the next reader asks the database
        _cache_down(exc, "writing")


# One command (EVALSHA): cheaper than a pipeline of three for redis-py and for Redis.
_GENERATION_AND_COUNT = """
redis.call('SET', KEYS[2], 0, 'EX', ARGV[1], 'NX')
return {redis.call('GET', KEYS[1]), redis.call('INCR', KEYS[2])}
"""
_scripts: dict[str, Any] = {}


def generation_with_count(count_key: str, timeout: int) -> bool:
    """Inside a request on Redis: read the serving generation for the rest of the request (as
    `generation` does) and count ``count_key`` (as `count_in_window` does) in one round trip;
    the count waits for `counted`. False when that cannot be done (another cache, outside a
    request, an error): then nothing was counted."""
    backend = _redis_backend()
    if backend is None or not getattr(_local, "in_request", False):
        return False
    if time.monotonic() < _down_until or _pushed() is not None:  # the feed: no round trip
        return False
    generation_key = backend.make_key(GENERATION_KEY)
    full = backend.make_key(count_key)
    try:
        client = backend._cache.get_client(full, write=True)  # noqa: SLF001 - redis-py's client
        script = _scripts.get("generation_and_count")
        if script is None:  # EVALSHA of the script's digest; loaded into Redis when missing
            script = _scripts["generation_and_count"] = client.register_script(
                _GENERATION_AND_COUNT
            )
        raw, count = script(keys=[generation_key, full], args=[timeout], client=client)
    except Exception as exc:  # noqa: BLE001 - nothing counted: the caller's own path decides
        _cache_down(exc, "reading the generation and counting")
        return False
    if raw is not None:
        value = backend._cache._serializer.loads(raw)  # noqa: SLF001 - as Django's get
        _local.memo = (f"{value}/{_failures}", time.monotonic())
    _local.counts = {**getattr(_local, "counts", {}), count_key: count}
    return True


def counted(count_key: str) -> int | None:
    """The count `generation_with_count` took for ``count_key`` in this request (once)."""
    counts = getattr(_local, "counts", None)
    return counts.pop(count_key, None) if counts else None


# --- counters ------------------------------------------------------------------------------


def count_in_window(key: str, timeout: int) -> int:
    """Add one to the counter ``key`` (created with ``timeout`` seconds to live); the new count.

    On Redis with the serving feed subscribed, no round trip: counted in this process and sent
    in batches (core/serving_feed.py: exact within the process, lagging across processes by
    what the others counted in the last 0.2 s); without it, one round trip (``SET NX EX`` then
    ``INCR`` in one pipeline). Beside the file cache
    (the embedded default) a counter is a file that each count appends a byte to (`_count_in_file`:
    exact across the machine's processes; the file cache's own ``incr`` listed its directory and
    wrote and renamed a file per count, most of a request's time). Other caches: ``add`` then
    ``incr``. Raises the cache's error when it cannot be reached."""
    backend = _redis_backend()
    if backend is not None:
        full = backend.make_and_validate_key(key)
        if _feed_on():
            generation_key = backend.make_key(GENERATION_KEY)
            count = serving_feed.count(backend, generation_key, full, timeout, _start_generation)
            if count is not None:  # counted in this process, sent in a batch
                return count
        client = backend._cache.get_client(full, write=True)  # noqa: SLF001 - redis-py's client
        pipe = client.pipeline(transaction=False)
        pipe.set(full, 0, ex=timeout, nx=True)
        pipe.incr(full)
        total = pipe.execute()[1]
        serving_feed.seen(full, total)
        return total
    files = _file_backend()
    if files is not None:
        return _count_in_file(Path(files._dir) / "counters", key, timeout)  # noqa: SLF001
    if cache.add(key, 1, timeout=timeout):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1


def _count_in_file(directory: Path, key: str, timeout: int) -> int:
    """Append one byte to the counter's file; the count is the file's length after it.

    An ``O_APPEND`` write is placed at the end of the file atomically, so the offset it leaves is
    this count's exact rank, whatever other processes append at the same time. A window's
    first count removes the counters older than ``timeout``."""
    path = directory / hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, b".")
        count = os.lseek(fd, 0, os.SEEK_CUR)
    finally:
        os.close(fd)
    if count == 1:
        cutoff = time.time() - timeout
        for old in directory.iterdir():
            with contextlib.suppress(OSError):  # another process removed it first
                if old.stat().st_mtime < cutoff:
                    old.unlink()
    return count


def _file_backend() -> Any:
    """Django's file cache when it is the default cache, else None."""
    from django.core.cache import caches
    from django.core.cache.backends.filebased import FileBasedCache

    backend = caches["default"]
    return backend if isinstance(backend, FileBasedCache) else None


def _redis_backend() -> Any:
    """Django's Redis cache when it is the default cache, else None."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    backend = caches["default"]
    return backend if isinstance(backend, RedisCache) else None


def shared_across_machines() -> bool:
    """Whether the shared cache is Redis (every web machine sees the same generation)."""
    return _redis_backend() is not None
