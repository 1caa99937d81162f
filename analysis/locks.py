"""A per-experiment lock so two workers never compute the same experiment at once.

PostgreSQL: a session-level advisory lock (released if the worker dies). SQLite: the embedded
default runs one worker, and SQLite serialises writers anyway; an in-process lock suffices.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

_local_locks: dict[int, threading.Lock] = {}
_guard = threading.Lock()
LOCK_NAMESPACE = 0x0ABAC05


@contextmanager
def experiment_lock(experiment_id: int) -> Iterator[bool]:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, experiment_id])
            acquired = bool(cursor.fetchone()[0])
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, experiment_id]
                    )
        return
    with _guard:
        lock = _local_locks.setdefault(experiment_id, threading.Lock())
    acquired = lock.acquire(blocking=False)
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()
