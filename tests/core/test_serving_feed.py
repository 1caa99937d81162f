"""The serving feed (core/serving_feed.py) on a real Redis: changes pushed to the process (no
cache read per request), a change's commit waiting for every subscriber, rate counts kept in
the process and sent in batches, and a dropped subscription costing at most about a second."""

import logging
import pickle
import time
import uuid

import pytest
import redis
from django.conf import settings

from core import cache as serving
from core import serving_feed

pytestmark = [
    pytest.mark.skipif(not serving.shared_across_machines(), reason="Redis only"),
    pytest.mark.django_db,
]


def wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return False


@pytest.fixture
def feed():
    """This process's feed, subscribed: (backend, the generation's full key, a raw client)."""
    assert wait_for(lambda: serving._pushed() is not None), "the feed never subscribed"
    backend = serving._redis_backend()
    client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    yield backend, backend.make_key(serving.GENERATION_KEY), client
    client.close()


def change_elsewhere(client, key: str) -> str:
    """What another process's change does: store a new token and publish it."""
    token = uuid.uuid4().hex[:16]
    pipe = client.pipeline(transaction=False)
    pipe.set(key, pickle.dumps(token, pickle.HIGHEST_PROTOCOL))
    pipe.publish(key, token)
    pipe.execute()
    return token


class Unreachable:
    def __getattr__(self, name):
        raise AssertionError(f"the cache was asked ({name})")


def test_a_change_elsewhere_is_pushed_and_requests_read_no_cache(feed, monkeypatch):
    """Another process's change reaches this one in milliseconds; reading the generation then
    asks the cache nothing."""
    _, key, client = feed
    started = time.monotonic()
    token = change_elsewhere(client, key)
    assert wait_for(lambda: serving._pushed() == token, 1.0)
    assert time.monotonic() - started < 0.5
    monkeypatch.setattr(serving, "cache", Unreachable())
    assert serving.generation() == f"{token}/{serving._failures}"


def test_a_change_commits_once_every_subscriber_took_it(feed):
    """A second subscriber (as another web process) holds the new token as soon as the
    change's commit-time replacement returns: no wait on the reader's side."""
    backend, key, _ = feed
    other = serving_feed._Feed(backend, key, serving._start_generation)
    try:
        assert wait_for(lambda: other.token is not None)
        for _ in range(5):
            serving._replace_generation(wait=True)
            stored = str(serving.cache.get(serving.GENERATION_KEY))
            assert other.token == stored and serving._pushed() == stored
    finally:
        other.stopped = True


def test_a_subscriber_that_never_answers_delays_a_change_at_most_the_ack_wait(feed, caplog):
    """A subscribed process that does not take the change (stuck) holds the commit for at most
    ACK_WAIT_SECONDS, and the wait is logged."""
    _, key, client = feed
    stuck = client.pubsub()
    stuck.subscribe(key)
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="core.serving_feed"):
            serving._replace_generation(wait=True)
        took = time.monotonic() - started
        assert serving_feed.ACK_WAIT_SECONDS <= took < serving_feed.ACK_WAIT_SECONDS + 1.0
        assert "took the change within" in caplog.text
    finally:
        stuck.close()


def test_counts_are_exact_in_the_process_and_add_the_others_after_a_flush(feed):
    """Counts need no round trip after a key's first: 1, 2, 3 at once; they reach Redis within
    FLUSH_SECONDS; another process's counts are in this one's total after the next flush, and
    at once when the key was idle here for STALE_SECONDS."""
    backend, _, client = feed
    key = f"test-counter-{uuid.uuid4().hex}"
    full = backend.make_and_validate_key(key)
    assert [serving.count_in_window(key, 60) for _ in range(3)] == [1, 2, 3]
    assert wait_for(lambda: client.get(full) == b"3", 1.0)
    assert 0 < client.ttl(full) <= 60
    client.incrby(full, 10)  # another process's counts, sent
    serving.count_in_window(key, 60)  # 14, sent with the next flush
    assert wait_for(lambda: client.get(full) == b"14", 1.0)
    assert serving.count_in_window(key, 60) == 15
    time.sleep(serving_feed.STALE_SECONDS + 0.1)
    client.incrby(full, 100)  # while this process counted nothing: its total is read again
    assert serving.count_in_window(key, 60) == 116


def test_a_dropped_subscription_costs_at_most_about_a_second(feed):
    """Redis drops the feed's connection (CLIENT KILL); a change made right after still
    reaches the process within RECHECK_SECONDS and a reconnection."""
    _, key, client = feed
    subscriber = serving_feed._feed.pubsub.connection._sock.getsockname()
    assert client.client_kill(f"{subscriber[0]}:{subscriber[1]}")
    token = change_elsewhere(client, key)
    limit = serving_feed.RECHECK_SECONDS + serving_feed.RETRY_SECONDS + 1.0
    assert wait_for(lambda: serving._pushed() == token, limit)
