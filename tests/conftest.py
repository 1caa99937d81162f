"""Shared fixtures: people, projects, API keys, API clients."""

import copy
import importlib
import os

import pytest
from rest_framework.test import APIClient

from experiments.models import Role
from experiments.services import api_key_create, membership_set, metric_create, project_create


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs the in-process tests on several workers) each worker
    has a test database of its own (pytest-django adds the worker's id to its name), but they
    share the Redis cache: the same ids in two databases must not read each other's cached keys,
    payloads and assignments, so each worker's cache keys get a prefix of their own, and its
    files (the analysis' file locks on SQLite) a directory of their own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    from django.conf import settings
    from django.test.utils import override_settings

    caches = copy.deepcopy(settings.CACHES)
    for cache in caches.values():
        cache["KEY_PREFIX"] = f"{cache.get('KEY_PREFIX', '')}-{worker}"
    var = settings.VAR_DIR / f"xdist-{worker}"
    var.mkdir(exist_ok=True)
    override_settings(CACHES=caches, VAR_DIR=var).enable()


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Tests create many users and the production hasher is deliberately slow (PBKDF2, about
    0.3 s a password on an idle core, over 1 s on a busy one): tests hash with MD5. Processes the
    tests start (gunicorn, Celery) keep the real hashers; the tests give them tokens and keys."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def usage_counts_buffer():
    """/evaluate's counts wait in a per-process buffer (assignments/services/usage_buffer.py):
    each test starts with it empty and without its flusher thread (which would write on a
    connection of its own, outside the test's transaction); tests flush it explicitly
    (`flag_usage_flush`), or turn the thread on (`buffer.background = True`)."""
    from assignments.services.usage_buffer import buffer

    buffer.stop()
    buffer.discard()
    buffer.background = False
    yield buffer
    buffer.stop()
    buffer.discard()


@pytest.fixture(autouse=True)
def serving_caches():
    """The serving paths' per-process caches (core/cache.py, the assignment cache) start empty
    in each test: a test's rolled-back database may hand the next test the same ids."""
    from assignments.services.assignment_cache import forget_all
    from core.cache import ProcessCache

    ProcessCache.clear_all()
    forget_all()
    yield
    ProcessCache.clear_all()
    forget_all()


@pytest.fixture(autouse=True)
def event_partitions_of_flushed_projects(request, django_db_blocker):
    """PostgreSQL: a transactional test's projects are removed by Django's flush (TRUNCATE: no
    delete signal), which leaves their event partitions (assignments/partitions.py) behind;
    they are dropped after the test, as the hourly maintenance would, so a whole run does not
    pile up thousands of tables."""
    yield
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not (marker.kwargs.get("transaction") or (marker.args[:1] == (True,))):
        return
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    from assignments.services import orphan_partitions_drop

    with django_db_blocker.unblock():
        orphan_partitions_drop()


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "pw-alice-123")


@pytest.fixture
def project(admin_user):
    return project_create(slug="shop", name="Shop", owner=admin_user)


@pytest.fixture
def make_member(django_user_model, project):
    def make(username: str, role: str = Role.EDITOR, proj=None):
        user = django_user_model.objects.create_user(
            username, f"{username}@example.com", "pw-12345"
        )
        membership_set(project=proj or project, user=user, role=role)
        return user

    return make


@pytest.fixture
def api(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.fixture
def service_secret(project):
    return api_key_create(project=project, name="svc", scopes=["assign", "ingest", "read"]).secret


@pytest.fixture
def service(service_secret):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {service_secret}")
    return client


@pytest.fixture
def metrics(project):
    return [
        metric_create(
            project=project, key="purchase", name="Purchase", kind="binomial", event_name="purchase"
        ),
        metric_create(
            project=project, key="revenue", name="Revenue", kind="mean", event_name="purchase"
        ),
    ]


@pytest.fixture
def read_before(monkeypatch):
    """``read_before(Model, field=value)``: every ``get`` of ``Model`` returns the row as it was
    read before another worker changed it (those fields overwritten): a task that lost a race."""

    def stale(model, **fields):
        from django.db.models.query import QuerySet

        read = QuerySet.get

        def get(queryset, *args, **kwargs):
            found = read(queryset, *args, **kwargs)
            if queryset.model is model:
                for name, value in fields.items():
                    setattr(found, name, value)
            return found

        monkeypatch.setattr(QuerySet, "get", get)

    return stale


def pytest_collection_modifyitems(config, items):
    """Every test of a fuzzing module (tests/security/test_fuzz_*.py) is marked `fuzz`, so
    `make test-fast` can leave the fuzzing out (`-m "not fuzz"`)."""
    for item in items:
        if item.path.name.startswith("test_fuzz_"):
            item.add_marker(pytest.mark.fuzz)


@pytest.fixture
def reload_settings(monkeypatch):
    """``reload_settings()``: config/settings.py run again, reading the environment as the test's
    ``monkeypatch`` set it; afterwards the environment is restored and the module run again."""
    import config.settings as settings_module

    yield lambda: importlib.reload(settings_module)
    monkeypatch.undo()
    importlib.reload(settings_module)
