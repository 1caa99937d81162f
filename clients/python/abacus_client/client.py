"""`AbacusClient`: local evaluation of an environment's flags and experiments, exposure and
event tracking.

Evaluation is the official `growthbook` SDK's over the environment's payload
(``GET /api/features/<client key>``), refreshed in a background thread by polling with ETags
(and, with ``streaming=True``, by the ``/sub/<client key>`` Server-Sent Events stream). The
payload carries values, not variation keys, so the client names a flag's variation from the
payload where it can (rollout rules' ids ``<rule>:<variation>``, experiment rules' ``meta``)
and otherwise asks ``POST /api/v1/evaluate`` once per (flag, value) per payload version
(values are unique within a flag), in the caller's thread with a short timeout. The same answer
says whether a feature is a flag at all and, for flags served without rules, whether it is off.

Exposures: the first evaluation of (flag, unit, variation) queues one flag exposure; the SDK's
tracking callback queues one experiment exposure per (experiment, unit, variant). Both go
through a bounded de-duplication memory (least recently seen forgotten first).
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from growthbook import GrowthBook

from abacus_client.batcher import EventBatcher

logger = logging.getLogger("abacus_client")

# Reasons, as POST /api/v1/evaluate names them; "unknown" for a key the payload lacks.
STAT_KEYS = (
    "queued", "sent", "accepted", "duplicates", "rejected", "retries",
    "dropped_overflow", "dropped_rejected", "dropped_failed", "dropped_shutdown", "dropped_closed",
)  # fmt: skip
REASONS = ("off", "prerequisite", "rule", "rollout", "experiment", "default", "unknown")


@dataclass(frozen=True)
class Evaluation:
    key: str
    value: Any
    variation: str | None  # the variation (flags) or variant (experiments) key, when known
    reason: str  # one of REASONS
    rule_id: str | None = None
    experiment: str | None = None  # the experiment that decided, if any

    @property
    def on(self) -> bool:
        return _truthy(self.value)


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", 0.0)


def _value_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _Model:
    """One payload version: the SDK instance over it and what the payload says about flags."""

    def __init__(self, payload: dict[str, Any], etag: str | None, on_viewed: Any) -> None:
        self.etag = etag
        self.features: dict[str, Any] = dict(payload.get("features") or {})
        self.sdk = GrowthBook(features=self.features, on_experiment_viewed=on_viewed)
        # flag -> {value as JSON: variation key}; features known (not) to be flags; the reason
        # of flags served without rules (off or default), as the server said.
        self.keys: dict[str, dict[str, str]] = collections.defaultdict(dict)
        self.kind: dict[str, str] = {}
        self.ruleless_reason: dict[str, str] = {}
        self.rollouts: dict[str, tuple[str, str]] = {}  # payload rule id -> (rule, variation)
        for key, feature in self.features.items():
            rules = feature.get("rules") or []
            for rule in rules:
                rid = str(rule.get("id") or "")
                if rid in (f"{key}:shipped",) or rid.startswith(f"{key}:phase-"):
                    self.kind[key] = "experiment"
                elif "range" in rule and "force" in rule and ":" in rid:
                    rule_id, variation = rid.split(":", 1)
                    self.rollouts[rid] = (rule_id, variation)
                    self.keys[key][_value_key(rule["force"])] = variation
                    self.kind[key] = "flag"
                elif rule.get("variations") and rule.get("meta"):
                    for value, meta in zip(rule["variations"], rule["meta"], strict=False):
                        if isinstance(meta, dict) and meta.get("key"):
                            self.keys[key][_value_key(value)] = meta["key"]
                    if rule.get("key") != key:
                        self.kind[key] = "flag"
                elif ":prerequisite:" in rid:
                    self.kind[key] = "flag"


class AbacusClient:
    """A service's connection to one abacus environment.

    ``url``: the abacus server; ``client_key``: the environment's client key (public);
    ``api_key``: an API key of that environment with the ``ingest`` and ``evaluate`` scopes.
    """

    def __init__(
        self,
        url: str,
        client_key: str,
        api_key: str,
        *,
        refresh_interval: float = 30.0,
        streaming: bool = False,
        track_exposures: bool = True,
        dedupe_size: int = 100_000,
        timeout: float = 5.0,
        resolve_timeout: float = 2.0,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        overflow: str = "drop_oldest",
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retries: int | None = None,
        close_timeout: float = 5.0,
        wait_for_payload: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.client_key = client_key
        self.refresh_interval = refresh_interval
        self.track_exposures = track_exposures
        self.timeout = timeout
        self.resolve_timeout = resolve_timeout
        self.close_timeout = close_timeout
        self._api_headers = {"Authorization": f"Bearer {api_key}"}
        self._session = requests.Session()
        self._lock = threading.RLock()  # the SDK instance is evaluated under it
        self._viewed: list[tuple[Any, Any]] = []
        self._seen: collections.OrderedDict[tuple[str, ...], None] = collections.OrderedDict()
        self._seen_lock = threading.Lock()
        self._dedupe_size = dedupe_size
        self._resolve_failed_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._closed = False
        self.batcher = EventBatcher(
            self.url,
            api_key,
            max_queue=max_queue,
            batch_size=batch_size,
            flush_interval=flush_interval,
            overflow=overflow,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retries=max_retries,
            timeout=timeout,
        )
        self._model = _Model({}, None, self._on_viewed)
        self.ready = False
        if wait_for_payload:
            self.refresh()
        self._poller = threading.Thread(target=self._poll, name="abacus-refresh", daemon=True)
        self._poller.start()
        self._streamer: threading.Thread | None = None
        if streaming:
            self._streamer = threading.Thread(
                target=self._stream, name="abacus-stream", daemon=True
            )
            self._streamer.start()
        ref = weakref.ref(self)
        self._atexit = lambda: (c := ref()) is not None and c.close(c.close_timeout)
        atexit.register(self._atexit)

    # -- payload -------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Fetch the payload now (If-None-Match the current one); True when it changed."""
        headers = {"If-None-Match": self._model.etag} if self._model.etag else {}
        try:
            response = self._session.get(
                f"{self.url}/api/features/{self.client_key}", headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            logger.warning("abacus payload refresh failed: %s", exc)
            return False
        if response.status_code == 304:
            self.ready = True
            return False
        if response.status_code != 200:
            logger.warning("abacus payload refresh: HTTP %d", response.status_code)
            return False
        self._set_payload(response.json(), response.headers.get("ETag"))
        return True

    def _set_payload(self, payload: dict[str, Any], etag: str | None) -> None:
        model = _Model(payload, etag, self._on_viewed)
        with self._lock:
            self._model = model
        self.ready = True

    def _poll(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            self.refresh()

    def _stream(self) -> None:
        """Follow /sub/<client key>: each ``features`` event carries the whole payload. On a
        broken stream, reconnect after a growing pause (polling goes on meanwhile)."""
        pause = 1.0
        while not self._stop.is_set():
            try:
                with self._session.get(
                    f"{self.url}/sub/{self.client_key}", stream=True, timeout=(self.timeout, 60)
                ) as response:
                    if response.status_code != 200:
                        raise requests.RequestException(f"HTTP {response.status_code}")
                    pause = 1.0
                    data: list[str] = []
                    buffer = b""
                    # chunk_size=None: each chunk as it arrives (iter_lines would wait for 512
                    # bytes and hold the end of an event back).
                    for chunk in response.iter_content(chunk_size=None):
                        if self._stop.is_set():
                            return
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        for raw in lines:
                            line = raw.decode("utf-8").rstrip("\r")
                            if line.startswith("data:"):
                                data.append(line[5:].strip())
                            elif line == "" and data:
                                payload = json.loads("\n".join(data))
                                data = []
                                if isinstance(payload, dict) and "features" in payload:
                                    self._set_payload(payload, None)
            except (requests.RequestException, ValueError) as exc:
                logger.info("abacus stream interrupted: %s", exc)
            self._stop.wait(pause)
            pause = min(pause * 2, 30.0)

    # -- evaluation ----------------------------------------------------------------------------

    def _on_viewed(self, experiment: Any, result: Any, user_context: Any = None) -> None:
        self._viewed.append((experiment, result))

    def evaluate(
        self,
        key: str,
        unit_id: str,
        attributes: dict[str, Any] | None = None,
        *,
        track: bool = True,
    ) -> Evaluation:
        """The flag's (or experiment's) value for this unit, its variation key and the reason.
        ``attributes``: targeting attributes; ``id`` defaults to ``unit_id``."""
        attrs = {"id": unit_id, **(attributes or {})}
        with self._lock:
            model = self._model
            self._viewed = []
            model.sdk.set_attributes(attrs)
            tracked = getattr(model.sdk, "_tracked", None)
            before = set(tracked) if tracked is not None and not track else None
            result = model.sdk.eval_feature(key)
            viewed, self._viewed = self._viewed, []
            if before is not None:
                # Untracked: forget what the SDK marked as seen, so a later tracked evaluation
                # of the same unit still records its exposure.
                for seen in set(tracked) - before:
                    del tracked[seen]
            if len(getattr(model.sdk, "_tracked", ())) > 10_000:
                model.sdk._tracked.clear()  # our own de-duplication is bounded; keep the SDK's so
        evaluation = self._explain(model, key, unit_id, attrs, result)
        if track and self.track_exposures:
            for experiment, exp_result in viewed:
                self._expose_experiment(experiment, exp_result)
            if evaluation.variation is not None and model.kind.get(key) == "flag":
                self._expose_flag(key, unit_id, evaluation.variation)
        return evaluation

    def is_on(self, key: str, unit_id: str, attributes: dict[str, Any] | None = None) -> bool:
        return self.evaluate(key, unit_id, attributes).on

    def get_feature_value(
        self, key: str, fallback: Any, unit_id: str, attributes: dict[str, Any] | None = None
    ) -> Any:
        evaluation = self.evaluate(key, unit_id, attributes)
        return (
            fallback
            if evaluation.reason == "unknown" or evaluation.value is None
            else (evaluation.value)
        )

    def _explain(
        self, model: _Model, key: str, unit_id: str, attrs: dict[str, Any], result: Any
    ) -> Evaluation:
        source, rule_id, value = result.source, result.ruleId or None, result.value
        if source == "unknownFeature" or key not in model.features:
            return Evaluation(key, None, None, "unknown")
        if source == "experiment":
            exp = result.experiment
            variant = result.experimentResult.key if result.experimentResult else None
            return Evaluation(key, value, variant, "experiment", rule_id, exp.key if exp else None)
        reason: str | None
        variation = model.keys.get(key, {}).get(_value_key(value))
        if source == "force" and rule_id and ":prerequisite:" in rule_id:
            reason = "prerequisite"
        elif source == "force" and rule_id in model.rollouts:
            rule_id, variation = model.rollouts[rule_id]
            reason = "rollout"
        elif source == "force" and rule_id and rule_id == f"{key}:shipped":
            return Evaluation(key, value, None, "rule", rule_id, key)
        elif source == "force":
            reason = "rule"
        elif source == "defaultValue":
            rules = model.features[key].get("rules") or []
            reason = "default" if rules else model.ruleless_reason.get(key)
            rule_id = None
        else:
            reason = source
        if (variation is None or reason is None) and model.kind.get(key) != "experiment":
            self._resolve(model, key, unit_id, attrs, value)
            variation = model.keys.get(key, {}).get(_value_key(value))
            if reason is None:
                reason = model.ruleless_reason.get(key)
        if model.kind.get(key) == "experiment":
            return Evaluation(key, value, None, reason or "default", rule_id, key)
        return Evaluation(key, value, variation, reason or "default", rule_id)

    def _resolve(
        self, model: _Model, key: str, unit_id: str, attrs: dict[str, Any], value: Any
    ) -> None:
        """Ask the server which variation serves ``value`` (and whether ``key`` is a flag)."""
        failed = self._resolve_failed_at.get(key)
        if failed is not None and time.monotonic() - failed < 5.0:
            return
        try:
            response = self._session.post(
                f"{self.url}/api/v1/evaluate",
                json={"unit_id": unit_id, "attributes": attrs, "flags": [key]},
                headers=self._api_headers,
                timeout=self.resolve_timeout,
            )
            response.raise_for_status()
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            self._resolve_failed_at[key] = time.monotonic()
            logger.warning("abacus could not name the variation of %r: %s", key, exc)
            return
        self._resolve_failed_at.pop(key, None)
        if key in (body.get("unknown") or []):
            model.kind[key] = "experiment"
            return
        answer = (body.get("flags") or {}).get(key)
        if not answer:
            return
        model.kind[key] = "flag"
        model.keys[key][_value_key(answer.get("value"))] = answer.get("variation")
        if not (model.features[key].get("rules") or []):
            model.ruleless_reason[key] = answer.get("reason") or "default"

    # -- exposures and events ------------------------------------------------------------------

    def _first_time(self, dedupe_key: tuple[str, ...]) -> bool:
        with self._seen_lock:
            if dedupe_key in self._seen:
                self._seen.move_to_end(dedupe_key)
                return False
            self._seen[dedupe_key] = None
            if len(self._seen) > self._dedupe_size:
                self._seen.popitem(last=False)
            return True

    def _expose_flag(self, flag: str, unit_id: str, variation: str) -> None:
        if self._first_time(("flag", flag, unit_id, variation)):
            self.batcher.put(
                {
                    "event_id": uuid.uuid4().hex,
                    "type": "exposure",
                    "flag": flag,
                    "variation": variation,
                    "unit_id": unit_id,
                    "timestamp": _now(),
                }
            )

    def _expose_experiment(self, experiment: Any, result: Any) -> None:
        if not getattr(result, "inExperiment", False):
            return
        unit = str(result.hashValue)
        if self._first_time(("experiment", experiment.key, unit, result.key)):
            self.batcher.put(
                {
                    "event_id": uuid.uuid4().hex,
                    "type": "exposure",
                    "experiment": experiment.key,
                    "variant": result.key,
                    "unit_id": unit,
                    "timestamp": _now(),
                }
            )

    def track(
        self,
        unit_id: str,
        name: str,
        value: float = 1.0,
        timestamp: datetime | float | str | None = None,
        *,
        properties: dict[str, Any] | None = None,
        event_id: str | None = None,
    ) -> str:
        """Queue a metric event; returns its event id. Never blocks (see the batcher)."""
        if isinstance(timestamp, datetime):
            ts: Any = timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
        else:
            ts = _now() if timestamp is None else timestamp
        event = {
            "event_id": event_id or uuid.uuid4().hex,
            "type": "metric",
            "name": name,
            "unit_id": unit_id,
            "value": value,
            "timestamp": ts,
        }
        if properties is not None:
            event["properties"] = properties
        self.batcher.put(event)
        return event["event_id"]

    # -- lifecycle -----------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters: queued, sent, accepted, duplicates, rejected, retries, dropped_*."""
        return {**dict.fromkeys(STAT_KEYS, 0), **self.batcher.stats}

    def flush(self, timeout: float | None = None) -> bool:
        return self.batcher.flush(timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Send what is queued (for at most ``timeout`` seconds) and stop the threads. Also
        called at interpreter exit. True when every event was sent."""
        if self._closed:
            return self.batcher.pending() == 0
        self._closed = True
        self._stop.set()
        atexit.unregister(self._atexit)
        sent = self.batcher.close(timeout)
        # The poller wakes at once; a refresh in flight ends within its timeout.
        if self._poller is not threading.current_thread():
            self._poller.join(min(timeout, self.timeout) + 0.5)
        self._session.close()
        return sent

    def __enter__(self) -> AbacusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(self.close_timeout)
