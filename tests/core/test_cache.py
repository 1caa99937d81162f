"""The serving caches (core/cache.py): what a process may trust, and when it asks again."""

import uuid

import pytest
from django.core.signals import request_finished, request_started

from core import cache as serving
from core.cache import ProcessCache

pytestmark = pytest.mark.django_db


@pytest.fixture
def counting():
    """A ProcessCache whose loads and version checks are counted."""
    calls = {"version": 0, "build": 0, "load": 0}
    state = {"version": 1}

    def version():
        calls["version"] += 1
        return state["version"]

    def build(seen):
        calls["build"] += 1
        return f"built at {seen}"

    def load():
        calls["load"] += 1
        return f"loaded {calls['load']}"

    cache = ProcessCache("test")
    yield cache, calls, state, version, build, load
    ProcessCache.instances.remove(cache)


def test_an_entry_is_trusted_while_the_generation_is_unchanged(counting):
    """No version check and no load while nothing changed."""
    cache, calls, _, version, build, load = counting
    assert cache.get_versioned("k", version, build) == "built at 1"
    assert cache.get_loaded("l", load) == "loaded 1"
    for _ in range(5):
        assert cache.get_versioned("k", version, build) == "built at 1"
        assert cache.get_loaded("l", load) == "loaded 1"
    assert calls == {"version": 1, "build": 1, "load": 1}


def test_a_change_makes_every_entry_ask_again(counting):
    """serving_changed(): the next read checks the version (rebuilding only if it moved) and
    loads again."""
    cache, calls, state, version, build, load = counting
    cache.get_versioned("k", version, build)
    cache.get_loaded("l", load)
    serving.serving_changed()
    assert cache.get_versioned("k", version, build) == "built at 1"  # same version: kept
    assert cache.get_loaded("l", load) == "loaded 2"
    assert calls == {"version": 2, "build": 1, "load": 2}
    state["version"] = 2
    serving.serving_changed()
    assert cache.get_versioned("k", version, build) == "built at 2"
    assert calls["build"] == 2


def test_saving_a_served_model_changes_the_generation(project):
    """Any save of an experiments/flags model (here a project) changes the shared token."""
    before = serving.generation()
    project.name = "Renamed"
    project.save()
    assert serving.generation() != before


def test_entries_are_rechecked_after_the_recheck_interval(counting, settings):
    """With ABACUS_SERVING_RECHECK_SECONDS = 0 every read asks again: the bound on staleness
    when a change never reached the shared cache."""
    cache, calls, _, version, build, load = counting
    settings.ABACUS_SERVING_RECHECK_SECONDS = 0
    cache.get_versioned("k", version, build)
    cache.get_versioned("k", version, build)
    assert calls["version"] == 2


def test_nothing_is_trusted_while_the_shared_cache_is_down(counting, monkeypatch, settings):
    """A cache error: every read asks the database (for RETRY_SECONDS), and entries checked
    before the outage are checked again afterwards. (The per-request read: with the serving
    feed, its thread finds the outage, tests/core/test_serving_feed.py.)"""
    settings.ABACUS_SERVING_FEED = False
    cache, calls, _, version, build, load = counting
    cache.get_loaded("l", load)

    class Broken:
        def get(self, *args, **kwargs):
            raise ConnectionError("cache down")

        add = set = get

    monkeypatch.setattr(serving, "cache", Broken())
    monkeypatch.setattr(serving, "_down_until", 0.0)
    assert serving.generation() is None
    cache.get_loaded("l", load)
    cache.get_loaded("l", load)
    assert calls["load"] == 3
    monkeypatch.undo()
    failures = serving._failures
    serving._down_until = 0.0
    assert serving.generation().endswith(f"/{failures}")
    cache.get_loaded("l", load)  # tagged during the outage: checked again
    assert calls["load"] == 4


def test_a_request_reads_the_generation_once(settings):
    """Without the serving feed: inside a request the token read first is kept (one round trip
    per request); a change made by the request itself is seen at once, and the next request
    reads again."""
    settings.ABACUS_SERVING_FEED = False
    request_started.send(sender=None)
    try:
        first = serving.generation()
        serving.cache.set(serving.GENERATION_KEY, "changed-elsewhere", timeout=None)
        assert serving.generation() == first
        serving.serving_changed()
        assert serving.generation() != first
    finally:
        request_finished.send(sender=None)
    serving.cache.set(serving.GENERATION_KEY, "changed-again", timeout=None)
    request_started.send(sender=None)
    try:
        assert serving.generation().startswith("changed-again/")
    finally:
        request_finished.send(sender=None)


def test_the_window_counter_adds_one_per_call():
    """count_in_window counts under its key, from 1."""
    key = f"test-counter-{uuid.uuid4().hex}"
    assert [serving.count_in_window(key, 60) for _ in range(3)] == [1, 2, 3]


@pytest.mark.skipif(not serving.shared_across_machines(), reason="Redis only")
def test_on_redis_the_generation_and_a_count_take_one_round_trip(settings):
    """Without the serving feed, generation_with_count: the request's token is read and the
    counter counted together; the count is handed out once."""
    settings.ABACUS_SERVING_FEED = False
    key = f"test-counter-{uuid.uuid4().hex}"
    serving.count_in_window(key, 60)
    request_started.send(sender=None)
    try:
        assert serving.generation_with_count(key, 60)
        assert serving._local.memo is not None
        assert serving.counted(key) == 2
        assert serving.counted(key) is None
    finally:
        request_finished.send(sender=None)
    assert not serving.generation_with_count(key, 60)  # outside a request: not done


def test_file_counters_give_every_count_its_exact_rank(tmp_path):
    """Beside the file cache a counter is an append-only file: 8 threads (each its own file
    descriptor, as separate processes have) counting 100 times each get 1..800, no count
    twice; a new window's first count removes counters past their lifetime."""
    import os
    import threading
    import time

    counts: list[int] = []
    lock = threading.Lock()

    def count() -> None:
        mine = [serving._count_in_file(tmp_path, "ratelimit:k:1", 120) for _ in range(100)]
        with lock:
            counts.extend(mine)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counts) == list(range(1, 801))
    [old] = list(tmp_path.iterdir())
    os.utime(old, (time.time() - 200, time.time() - 200))
    assert serving._count_in_file(tmp_path, "ratelimit:k:2", 120) == 1
    assert [p.name for p in tmp_path.iterdir()] != [old.name] and not old.exists()
