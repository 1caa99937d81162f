"""The command lines of abacus's three processes, written once: web, worker and beat.

- **web**: gunicorn serving ``config.wsgi`` with threaded workers (``gthread``: an SDK stream
  holds one thread for minutes, not a whole worker; hooks in config/gunicorn_hooks.py);
- **worker**: ``celery -A config worker``: every queue (config/queues.py), or the ones given
  (a pool per queue: docs/operations.md "Queues and worker pools");
- **beat**: ``celery -A config beat`` (queues the scheduled analyses).

`manage.py run_all` (``make run``), the end-to-end, fault and load tests and the benchmarks start
their processes from these functions, so a change to how abacus runs is made here and every one
of them runs it. Each returns an argv list for `subprocess.Popen`; the caller chooses the
environment (``DATABASE_URL``, ``CELERY_BROKER_URL``, ...) and supervises the process.
"""

import sys
from collections.abc import Sequence
from os import PathLike


def web(
    *,
    bind: str,
    workers: int = 2,
    threads: int = 32,
    timeout: int = 60,
    access_log: bool = True,
    log_level: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """gunicorn serving the Django app on ``bind`` (``host:port``).

    ``threads`` per worker process: requests and open SDK streams (``/sub/<client key>``) each
    take one; keep ``ABACUS_STREAMS_PER_PROCESS`` (default 24) below it so streams never take
    them all.
    """
    args = [python, "-m", "gunicorn", "config.wsgi", "--bind", bind]
    # Threads: gunicorn's gthread worker. One thread: the sync worker, as before (the fault
    # tests' servers, which never stream).
    args += ["--worker-class", "gthread" if threads > 1 else "sync"]
    args += ["--config", "python:config.gunicorn_hooks"]
    args += ["--workers", str(workers), "--threads", str(threads), "--timeout", str(timeout)]
    if access_log:
        args += ["--access-logfile", "-"]
    if log_level:
        args += ["--log-level", log_level]
    return args


def worker(
    *,
    name: str,
    pool: str | None = None,
    concurrency: int | None = None,
    queues: Sequence[str] = (),
    log_level: str = "INFO",
    module: str = "celery",
    python: str = sys.executable,
) -> list[str]:
    """A Celery worker named ``name`` (e.g. ``worker-1@%h``).

    ``pool``: Celery's default (prefork) unless given (``solo`` runs tasks in the worker process
    itself); ``queues``: the broker's queue names to consume (``config.queues.queue_name``), by
    default every declared queue (``make run``'s one worker); ``module``: what ``python -m``
    runs, ``celery`` or a wrapper that ends by calling Celery's command line (the fault tests'
    paused worker).
    """
    args = [python, "-m", module, "-A", "config", "worker", "--loglevel", log_level, "-n", name]
    if pool:
        args += ["--pool", pool]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    if queues:
        args += ["-Q", ",".join(queues)]
    return args


def beat(
    *, schedule: str | PathLike[str], log_level: str = "INFO", python: str = sys.executable
) -> list[str]:
    """Celery beat, keeping its schedule state in the file ``schedule``."""
    args = [python, "-m", "celery", "-A", "config", "beat", "--loglevel", log_level]
    return [*args, "--schedule", str(schedule)]
