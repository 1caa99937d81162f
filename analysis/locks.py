"""A per-experiment lock so two workers never compute the same experiment at once.

PostgreSQL: a session-level advisory lock, which the server releases if the worker dies, so it
holds across worker processes and machines. SQLite (the embedded default, one machine): an
exclusive ``flock`` on a file under VAR_DIR/locks/, which the kernel releases when the process
dies, so it holds across the worker's prefork processes.
"""

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)
LOCK_NAMESPACE = 0x0ABAC05


@contextmanager
def experiment_lock(experiment_id: int) -> Iterator[bool]:
    """Yields True if this process now holds the experiment's lock, False if another does."""
    if connection.vendor == "postgresql":
        with _advisory_lock(experiment_id) as acquired:
            yield acquired
    else:
        with _file_lock(experiment_id) as acquired:
            yield acquired


@contextmanager
def _advisory_lock(experiment_id: int) -> Iterator[bool]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, experiment_id])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, experiment_id]
                    )
            except DatabaseError:
                # The session is gone (and its lock with it) or unusable: drop it for sure.
                logger.warning("could not unlock experiment %s: closing", experiment_id)
                connection.close()


@contextmanager
def _file_lock(experiment_id: int) -> Iterator[bool]:
    directory = settings.VAR_DIR / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / f"experiment-{experiment_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            acquired = True
        except BlockingIOError:
            acquired = False
        try:
            yield acquired
        finally:
            if acquired:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
