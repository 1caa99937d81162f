"""``GET /sub/<client key>``: an environment's GrowthBook payload as Server-Sent Events.

The GrowthBook SDKs' streaming protocol: on connect the stream sends the current payload, then
the new payload whenever it changes, each as one event

    event: features
    data: {"status": 200, "features": {...}, "dateUpdated": "..."}

(the SDKs apply a ``features`` event's payload directly; ``features-updated`` would make them
fetch ``/api/features/<client key>`` again, one more round trip). Comment lines (``: heartbeat``)
keep idle streams open through proxies; a stream ends after ``ABACUS_STREAM_MAX_SECONDS``
(a little less, at random, so reconnections spread out) and the SDKs reconnect at once.

Change detection: one watcher thread per web process polls the payload version of every
environment that has a stream open in that process (`features_payload_for`: one cheap
query per environment, the payload rebuilt only on change) every
``ABACUS_STREAM_POLL_SECONDS`` and wakes that environment's streams. Polling rather than a
publish from every writer: whatever changes a flag or an experiment (services in any process,
scheduled changes in the worker, the admin) bumps the version the watcher reads, on the embedded
default as on PostgreSQL, with no broker; its cost is per process and per environment, not per
stream. The watcher stops when the last stream of its process ends.

Each open stream holds one thread of gunicorn's gthread worker (config/processes.py): at most
``ABACUS_STREAMS_PER_PROCESS`` are open per process, past it the answer is 503 with
``Retry-After``. `stop` (called by the gunicorn hooks when the worker is told to stop) ends
every stream so the worker exits at once; the SDKs reconnect to another.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from assignments.selectors import features_payload_for
from experiments.models import Environment

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


@dataclass
class _Channel:
    """One environment followed by this process: its latest payload and how many streams."""

    environment: Environment
    tag: str
    data: str  # the payload as one line of JSON
    streams: int = 0


class Hub:
    """The streams of this process, by environment, and the watcher thread that feeds them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._channels: dict[int, _Channel] = {}
        self._streams = 0
        self._watcher: threading.Thread | None = None
        self.stopping = False

    def streams(self) -> int:
        """How many streams are open in this process."""
        return self._streams

    def watching(self) -> bool:
        """Whether the watcher thread runs (it stops with the last stream)."""
        watcher = self._watcher
        return watcher is not None and watcher.is_alive()

    def subscribe(self, environment: Environment, tag: str, data: str) -> tuple[_Channel, str, str]:
        """Count a stream of ``environment`` and start the watcher if needed. Returns the
        channel and the payload to send first: the channel's own when the environment is
        already followed (a stream never goes back to an older payload than its neighbours)."""
        with self._lock:
            channel = self._channels.get(environment.pk)
            if channel is None:
                channel = self._channels[environment.pk] = _Channel(environment, tag, data)
            channel.streams += 1
            self._streams += 1
            if not self.watching():
                self._watcher = threading.Thread(
                    target=self._watch, name="abacus-stream-watcher", daemon=True
                )
                self._watcher.start()
            return channel, channel.tag, channel.data

    def unsubscribe(self, channel: _Channel) -> None:
        with self._lock:
            channel.streams -= 1
            self._streams -= 1
            if channel.streams == 0 and self._channels.get(channel.environment.pk) is channel:
                del self._channels[channel.environment.pk]

    def wait(self, channel: _Channel, tag: str, timeout: float) -> tuple[str, str] | None:
        """Block until the channel's payload is no longer ``tag`` (its new tag and data), or
        ``timeout`` seconds or a stop (None)."""
        with self._changed:
            self._changed.wait_for(lambda: channel.tag != tag or self.stopping, timeout)
            if channel.tag != tag and not self.stopping:
                return channel.tag, channel.data
            return None

    def stop(self) -> None:
        """End every stream of this process (its worker is stopping); refuse new ones."""
        self.stopping = True
        with self._changed:
            self._changed.notify_all()

    def _watch(self) -> None:
        interval = settings.ABACUS_STREAM_POLL_SECONDS
        try:
            while True:
                with self._lock:
                    if not self._channels or self.stopping:
                        self._watcher = None
                        return
                    channels = list(self._channels.values())
                for channel in channels:
                    self._refresh(channel)
                time.sleep(interval)
        finally:
            connection.close()  # this thread's own connection

    def _refresh(self, channel: _Channel) -> None:
        try:
            payload, tag = features_payload_for(channel.environment)
        except Exception:  # noqa: BLE001 - a database hiccup must not end the watcher
            logger.exception("Stream watcher: no payload for %s", channel.environment)
            connection.close()  # reconnect on the next round
            return
        if tag != channel.tag:
            data = _json_line(payload)
            with self._changed:
                channel.tag, channel.data = tag, data
                self._changed.notify_all()


hub = Hub()


def stop() -> None:
    """End this process's streams: the gunicorn hooks call it when the worker stops."""
    hub.stop()


def _json_line(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def _event(data: str) -> bytes:
    return f"event: features\ndata: {data}\n\n".encode()


def _events(environment: Environment, tag: str, data: str) -> Iterator[bytes]:
    """The body of one stream. Subscribes on its first step, so a response that is never read
    (a test's, a client gone before the first byte) never counts."""
    channel, tag, data = hub.subscribe(environment, tag, data)
    try:
        yield f"retry: {RETRY_AFTER_SECONDS * 1000}\n".encode() + _event(data)
        lifetime = settings.ABACUS_STREAM_MAX_SECONDS * random.uniform(0.9, 1.0)  # noqa: S311
        deadline = time.monotonic() + lifetime
        heartbeat = settings.ABACUS_STREAM_HEARTBEAT_SECONDS
        while not hub.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            changed = hub.wait(channel, tag, min(heartbeat, left))
            if changed is not None:
                tag, data = changed
                yield _event(data)
            elif not hub.stopping and deadline - time.monotonic() > 0:
                yield b": heartbeat\n\n"
    finally:
        hub.unsubscribe(channel)


@require_GET
def subscribe_view(request: HttpRequest, client_key: str) -> HttpResponse:
    """Server-Sent Events of the environment's payload for GrowthBook SDKs in streaming mode.
    The client key is public, not a secret (as for /api/features/<client key>)."""
    environment = get_object_or_404(
        Environment.objects.select_related("project"), client_key=client_key
    )
    if hub.stopping or hub.streams() >= settings.ABACUS_STREAMS_PER_PROCESS:
        response: HttpResponse = JsonResponse(
            {"detail": "Too many open streams on this server; retry later."}, status=503
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    else:
        payload, tag = features_payload_for(environment)
        if not connection.in_atomic_block:
            # The stream needs no database (the watcher has its own connection): do not hold
            # one of the database's connections for minutes.
            connection.close()
        response = StreamingHttpResponse(
            _events(environment, tag, _json_line(payload)), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    response["Access-Control-Allow-Origin"] = "*"
    return response
