"""Liveness and readiness endpoints for load balancers, monitoring and `make run`.

- `/healthz`: the web process is up and answering. Touches no dependency.
- `/readyz`: which dependencies this web process can reach. The database is required (without it
  no endpoint works): 503 when it is down. The broker is needed only to queue analyses, so
  assignment and ingestion keep working without it: the answer is then 200 with status
  "degraded" (503 with `?strict=1`, for monitoring that wants to page on it). The cache only
  counts rate limits, which fail open: reported, never fatal.
"""

import logging
import time
from collections.abc import Callable

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)
REQUIRED = ("database",)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _cache() -> None:
    cache.set("abacus:readyz", "1", timeout=10)
    if cache.get("abacus:readyz") != "1":
        raise RuntimeError("value written was not read back")


CHECKS: dict[str, Callable[[], None]] = {
    "database": _database,
    "broker": _broker,
    "cache": _cache,
}


def _run(name: str, check: Callable[[], None]) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        check()
        outcome = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        # The endpoint is public: the details (hosts, ports, users) go to the log only.
        logger.warning("readyz: %s unreachable: %s", name, exc)
        outcome = f"error: {type(exc).__name__}"
    return outcome, round((time.perf_counter() - started) * 1000, 1)


def readyz(request: HttpRequest) -> JsonResponse:
    results = {name: _run(name, check) for name, check in CHECKS.items()}
    failed = [name for name, (outcome, _) in results.items() if outcome != "ok"]
    strict = request.GET.get("strict") in {"1", "true", "yes"}
    if any(name in REQUIRED for name in failed) or (strict and failed):
        status, code = "unavailable", 503
    elif failed:
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    body: dict[str, object] = {"status": status}
    body.update({name: outcome for name, (outcome, _) in results.items()})
    body["failed"] = failed
    body["latency_ms"] = {name: ms for name, (_, ms) in results.items()}
    return JsonResponse(body, status=code)
