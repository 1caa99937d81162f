"""Which database analysis reads use (core.replica) and how the router follows it
(config/routers.py). The real replica is in tests/e2e/test_read_replica.py."""

import threading
from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS

from config.routers import ReplicaRouter
from core import replica
from experiments.models import Project

router = ReplicaRouter()


def _on(alias: str) -> SimpleNamespace:
    return SimpleNamespace(_state=SimpleNamespace(db=alias))


@pytest.fixture
def replica_caught_up(monkeypatch):
    """As if a replica were configured and had replayed the primary's position."""
    monkeypatch.setattr(replica, "_usable_alias", lambda: replica.REPLICA)


def test_without_a_replica_analysis_reads_use_the_primary():
    """No DATABASE_REPLICA_URL (the tests' settings): the block reads the primary."""
    assert not replica.replica_configured()
    with replica.analysis_reads() as alias:
        assert alias == DEFAULT_DB_ALIAS == replica.read_alias()
        assert router.db_for_read(Project) == DEFAULT_DB_ALIAS


def test_the_router_reads_the_replica_only_inside_analysis_reads(replica_caught_up):
    """Reads follow the block; outside it, even an object read from the replica is read again
    from the primary."""
    assert router.db_for_read(Project, instance=_on(replica.REPLICA)) == DEFAULT_DB_ALIAS
    with replica.analysis_reads() as alias:
        assert alias == replica.REPLICA
        assert router.db_for_read(Project) == replica.REPLICA
        with replica.analysis_reads() as nested:  # an enclosing block has chosen
            assert nested == replica.REPLICA
    assert router.db_for_read(Project) == DEFAULT_DB_ALIAS


@pytest.mark.django_db(transaction=True)
def test_primary_reads_inside_a_replica_block_use_one_transaction_on_the_primary(
    replica_caught_up,
):
    """Data only the primary holds (the unlogged stored aggregates) is read there, in one
    REPEATABLE READ transaction on PostgreSQL; outside a replica block the caller's
    transaction is used as it is."""
    from django.db import connection

    with replica.primary_reads() as alias:
        assert alias == DEFAULT_DB_ALIAS and not connection.in_atomic_block
    with replica.analysis_reads():
        with replica.primary_reads() as alias:
            assert alias == DEFAULT_DB_ALIAS == replica.read_alias()
            assert router.db_for_read(Project) == DEFAULT_DB_ALIAS
            assert connection.in_atomic_block
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SHOW transaction_isolation")
                    assert cursor.fetchone()[0] == "repeatable read"
        assert replica.read_alias() == replica.REPLICA
        assert not connection.in_atomic_block


def test_writes_always_go_to_the_primary(replica_caught_up):
    """The replica is read-only: a write inside the block, or of an object read from the
    replica, goes to the primary; migrations never run on the replica."""
    with replica.analysis_reads():
        assert router.db_for_write(Project) == DEFAULT_DB_ALIAS
        assert router.db_for_write(Project, instance=_on(replica.REPLICA)) == DEFAULT_DB_ALIAS
    assert router.allow_migrate(replica.REPLICA, "analysis") is False
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "analysis") is True
    assert router.allow_relation(_on(replica.REPLICA), _on(DEFAULT_DB_ALIAS)) is True
    assert router.allow_relation(_on("other"), _on(DEFAULT_DB_ALIAS)) is None


def test_a_streamed_read_leaves_its_consumer_on_the_primary(replica_caught_up):
    """stream_analysis_reads produces each item with the replica chosen, while the code that
    consumes the stream between items (a WSGI server) keeps reading the primary."""
    seen_inside: list[str] = []

    def generate():
        for i in range(3):
            seen_inside.append(replica.read_alias())
            yield i

    seen_outside = []
    for item in replica.stream_analysis_reads(generate):
        seen_outside.append((item, replica.read_alias()))
    assert seen_inside == [replica.REPLICA] * 3
    assert seen_outside == [(0, "default"), (1, "default"), (2, "default")]


def test_a_stream_closed_early_closes_its_generator(replica_caught_up):
    """A client that disconnects mid-export: the inner generator is closed (its database
    cursor released) in its own context."""
    closed = threading.Event()

    def generate():
        try:
            yield from range(10)
        finally:
            closed.set()

    stream = replica.stream_analysis_reads(generate)
    assert next(stream) == 0
    stream.close()
    assert closed.is_set()
    assert replica.read_alias() == DEFAULT_DB_ALIAS


def test_a_replica_needs_postgresql(monkeypatch, reload_settings):
    """DATABASE_REPLICA_URL beside a SQLite DATABASE_URL is refused at start, naming both; a
    PostgreSQL pair adds the alias, mirrored by the tests' database."""
    monkeypatch.setenv("DATABASE_URL", "sqlite:////tmp/abacus-replica-test.sqlite3")
    monkeypatch.setenv("DATABASE_REPLICA_URL", "postgres://abacus@replica:5432/abacus")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL and DATABASE_REPLICA_URL"):
        reload_settings()
    monkeypatch.setenv("DATABASE_URL", "postgres://abacus@primary:5432/abacus")
    fresh = reload_settings()
    assert fresh.DATABASES["replica"]["HOST"] == "replica"
    assert fresh.DATABASES["replica"]["TEST"] == {"MIRROR": "default"}
    assert fresh.ABACUS_REPLICA_MAX_WAIT_SECONDS == 10
    monkeypatch.setenv("ABACUS_REPLICA_MAX_WAIT_SECONDS", "-1")
    with pytest.raises(ImproperlyConfigured, match="ABACUS_REPLICA_MAX_WAIT_SECONDS"):
        reload_settings()
