"""A blue-green router that reads an abacus flag: each request goes to the upstream of the
variation the flag serves its unit, so a release (or a rollback) switches traffic within
``--cache-seconds``. Standard library only; an example to adapt, not a production proxy.

    ABACUS_KEY=abk_... python docs/examples/blue_green_router.py \\
        --abacus http://127.0.0.1:8000 --flag new-checkout \\
        --route off=http://127.0.0.1:9001 --route on=http://127.0.0.1:9002 \\
        --listen 127.0.0.1:8080 --track --report

- The unit is the ``X-Unit-Id`` header (``--unit-header``), else the client's address; its
  variation comes from ``POST /api/v1/evaluate`` (a key with the ``evaluate`` scope, of the
  environment whose flag rules apply) and is cached per unit for ``--cache-seconds``.
- ``--track`` asks /evaluate to record the flag exposures the release analyses; ``--report``
  posts each request's ``requests``, ``errors`` (a 5xx or an unreachable upstream) and
  ``latency_ms`` metric events to ``POST /api/v1/events`` (the ``ingest`` scope), batched every
  second: with metrics on those events (the demo's error rate and latency read these names),
  the release's monitor compares green with blue and switches back on harm.
- If abacus cannot be reached, a unit keeps its last variation; a unit never seen gets
  ``--fallback`` (default: the first ``--route``, the blue one).
- Every answer carries ``X-Abacus-Variation``.

docs/releases.md "Blue-green: reading the flag from a router".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("blue_green_router")

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip
MAX_CACHED_UNITS = 100_000
MAX_BATCH = 1000


class Abacus:
    """``POST /api/v1/evaluate`` with a per-unit cache, and a batched ``POST /api/v1/events``."""

    def __init__(self, url: str, key: str, flag: str, *, cache_seconds: float, fallback: str,
                 track: bool, timeout: float = 2.0) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self.key = key
        self.flag = flag
        self.cache_seconds = cache_seconds
        self.fallback = fallback
        self.track = track
        self.timeout = timeout
        self.cache: dict[str, tuple[str, float]] = {}
        self.lock = threading.Lock()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=100_000)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            return json.loads(response.read() or b"null")

    def variation(self, unit: str) -> str:
        now = time.monotonic()
        with self.lock:
            cached = self.cache.get(unit)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            answer = self._post(
                "/api/v1/evaluate", {"unit_id": unit, "flags": [self.flag], "track": self.track}
            )
            variation = answer["flags"][self.flag]["variation"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            stale = cached[0] if cached is not None else self.fallback
            log.warning("evaluate failed (%s): serving %s to %s", exc, stale, unit)
            return stale
        with self.lock:
            if len(self.cache) >= MAX_CACHED_UNITS:
                self.cache.clear()
            self.cache[unit] = (variation, now + self.cache_seconds)
        return variation

    def report(self, unit: str, latency_ms: float, failed: bool) -> None:
        at = datetime.now(UTC).isoformat()
        names = [("requests", 1.0), ("latency_ms", latency_ms)]
        if failed:
            names.append(("errors", 1.0))
        for name, value in names:
            event = {"event_id": uuid.uuid4().hex, "type": "metric", "name": name,
                     "unit_id": unit, "value": value, "timestamp": at}  # fmt: skip
            try:
                self.events.put_nowait(event)
            except queue.Full:
                return  # shed load rather than hold requests

    def flush_forever(self, every: float = 1.0) -> None:
        while True:
            time.sleep(every)
            batch: list[dict[str, Any]] = []
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.events.get_nowait())
                except queue.Empty:
                    break
            if batch:
                try:
                    self._post("/api/v1/events", {"events": batch})
                except (OSError, ValueError) as exc:
                    log.warning("could not post %d events: %s", len(batch), exc)


def make_handler(abacus: Abacus, routes: dict[str, str], unit_header: str, report: bool,
                 timeout: float) -> type[BaseHTTPRequestHandler]:  # fmt: skip
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _proxy(self) -> None:
            unit = self.headers.get(unit_header) or self.client_address[0]
            variation = abacus.variation(unit)
            upstream = routes.get(variation) or routes[abacus.fallback]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            request = urllib.request.Request(
                upstream + self.path, data=body, method=self.command, headers=headers
            )
            started = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                    status, answer, reply = response.status, response.headers, response.read()
            except urllib.error.HTTPError as exc:
                status, answer, reply = exc.code, exc.headers, exc.read()
            except OSError as exc:
                status, answer, reply = 502, {}, f"upstream {variation} unreachable: {exc}".encode()
            if report:
                abacus.report(unit, (time.monotonic() - started) * 1000.0, status >= 500)
            self.send_response(status)
            for name, value in answer.items():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("X-Abacus-Variation", variation)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _proxy

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            log.debug(format, *args)

    return Handler


def parse_route(text: str) -> tuple[str, str]:
    variation, sep, url = text.partition("=")
    if not sep or not variation or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{text!r}: use VARIATION=http://host:port")
    return variation, url.rstrip("/")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--abacus", default=os.environ.get("ABACUS_URL"), help="abacus's URL")
    parser.add_argument(
        "--key",
        default=os.environ.get("ABACUS_KEY"),
        help="API key (evaluate; ingest with --report); ABACUS_KEY",
    )
    parser.add_argument("--flag", required=True)
    parser.add_argument(
        "--route",
        type=parse_route,
        action="append",
        required=True,
        metavar="VARIATION=URL",
        help="an upstream per variation; blue first",
    )
    parser.add_argument(
        "--fallback",
        help="variation for units never evaluated when abacus "
        "is unreachable (default: the first route's)",
    )
    parser.add_argument("--listen", default="127.0.0.1:8080", help="host:port")
    parser.add_argument("--unit-header", default="X-Unit-Id")
    parser.add_argument("--cache-seconds", type=float, default=5.0)
    parser.add_argument("--upstream-timeout", type=float, default=30.0)
    parser.add_argument("--track", action="store_true", help="record flag exposures")
    parser.add_argument("--report", action="store_true", help="post request/error/latency events")
    args = parser.parse_args(argv)  # fmt: skip
    if not args.abacus or not args.key:
        parser.error("--abacus (ABACUS_URL) and --key (ABACUS_KEY) are required")
    routes = dict(args.route)
    fallback = args.fallback or args.route[0][0]
    if fallback not in routes:
        parser.error(f"--fallback {fallback!r} has no --route")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    abacus = Abacus(args.abacus, args.key, args.flag, cache_seconds=args.cache_seconds,
                    fallback=fallback, track=args.track)  # fmt: skip
    if args.report:
        threading.Thread(target=abacus.flush_forever, daemon=True).start()
    host, _, port = args.listen.rpartition(":")
    handler = make_handler(abacus, routes, args.unit_header, args.report, args.upstream_timeout)
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), handler)
    log.info("routing %s by flag %s: %s", args.listen, args.flag, routes)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
