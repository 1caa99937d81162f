"""gunicorn server hooks of the web processes (config/processes.py passes this module to
gunicorn as its configuration: ``--config python:config.gunicorn_hooks``).

An SDK stream (``/sub/<client key>``, assignments/streaming.py) holds a worker thread for
minutes; when gunicorn stops a worker (SIGTERM: graceful, SIGINT/SIGQUIT: quick) the streams
end at once, so the worker exits without waiting out its graceful timeout and the SDKs
reconnect to a worker that stays.
"""

import signal
import sys
from typing import Any


def post_worker_init(worker: Any) -> None:
    """Chain SIGTERM (the worker's graceful stop) to ending this process's streams."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        _stop_streams()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def worker_int(worker: Any) -> None:
    """SIGINT or SIGQUIT (a quick stop): end the streams before the worker exits."""
    _stop_streams()


def _stop_streams() -> None:
    """End this process's streams, if it ever served one. Never imports: a worker that never
    loaded the streaming module has no stream, and importing inside a signal handler breaks when
    a second signal lands mid-import (gunicorn sends SIGTERM twice to a worker stopped while
    starting: the second handler then finds the module half-initialised)."""
    streaming = sys.modules.get("assignments.streaming")
    stop = getattr(streaming, "stop", None)
    if stop is not None:
        stop()
