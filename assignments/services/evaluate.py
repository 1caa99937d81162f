"""Server-side flag evaluation (``POST /api/v1/evaluate``): the environment's served flags
(cached per process, one version query per request) evaluated by `bucketing.flags`, the same
decision the GrowthBook SDKs make on that environment's payload; every evaluation counted in the
flags' usage (buffered in the process and written every few seconds, `usage_buffer`: an
untracked evaluation writes nothing) and, when asked, recorded as flag exposures (stored in
the request, one statement).

A tracked evaluation's exposure has a derived event id: the SHA-256 of the environment, flag,
unit, variation and the minute, so a client retrying a request (or evaluating the same unit
again) within a minute records the exposure once; a unit served another variation is a new
exposure. Usage counts every evaluation, tracked or not, retried or not.
"""

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from assignments.services.flag_usage import usage_day
from assignments.services.holdout_exposures import holdout_exposures_seen_now
from assignments.services.usage_buffer import flag_usage_buffer
from bucketing.flags import FlagResult, evaluate_flags
from core.errors import DomainError
from experiments.models import PRODUCTION, ApiKey, Environment
from flags.selectors import environment_flags

MAX_EVALUATE_FLAGS = 200
TRACKED_ID_PREFIX = "evaluate-"


@dataclass(frozen=True)
class Evaluation:
    environment: str  # the environment's key
    results: dict[str, FlagResult]  # by flag key, in the order asked (all: the flags' order)
    unknown: list[str]  # keys asked for that the environment does not serve


def evaluation_environment(*, api_key: ApiKey, requested: str | None) -> Environment:
    """The environment to evaluate in: ``requested`` (an environment key of the key's project)
    or the API key's own (production for keys made before environments)."""
    if requested is None:
        if api_key.environment_id is not None:
            environment = api_key.environment
            environment.project = api_key.project  # the same row: spare the lookup
            return environment
        requested = PRODUCTION
    environment = Environment.objects.filter(project_id=api_key.project_id, key=requested).first()
    if environment is None:
        raise DomainError(f"The project has no environment '{requested}'.", "environment")
    environment.project = api_key.project
    return environment


def flags_evaluate(
    *,
    environment: Environment,
    unit_id: str,
    attributes: Mapping[str, Any],
    keys: Sequence[str] | None = None,
    track: bool = False,
) -> Evaluation:
    """Every served flag (or the ``keys`` asked for) for one unit, with the reason and rule.

    ``attributes`` get ``id`` = ``unit_id`` unless they carry their own ``id``, as ``/assign``
    does. Archived and unknown keys are listed in ``unknown``. Counts one evaluation per flag
    served; with ``track`` also stores one flag exposure per flag served and, in production
    with a running holdout, the holdout's exposure of the unit. The holdout's units skip
    rollouts, experiment rules and shipped experiments (docs/flags.md "Holdout")."""
    if keys is not None and len(keys) > MAX_EVALUATE_FLAGS:
        raise DomainError(f"At most {MAX_EVALUATE_FLAGS} flags per request.", "flags")
    served = environment_flags(environment)
    if "id" not in attributes:
        attributes = {**attributes, "id": unit_id}
    if keys is not None:
        keys = list(dict.fromkeys(keys))  # asked twice, answered once
    results = evaluate_flags(served.specs, attributes, keys)
    unknown = [key for key in keys if key not in results] if keys is not None else []
    if results:
        _record(environment, served.flag_ids, unit_id, results, track)
        if track and served.holdout is not None:  # production: the holdout's exposure too
            holdout_exposures_seen_now(holdout=served.holdout, unit_ids=[unit_id])
    return Evaluation(environment.key, results, unknown)


def _record(
    environment: Environment,
    flag_ids: Mapping[str, int],
    unit_id: str,
    results: Mapping[str, FlagResult],
    track: bool,
) -> None:
    now = timezone.now()
    day = usage_day(now)
    served = [(flag_ids[key], key, result.variation) for key, result in results.items()]
    if track:  # events: stored (and committed) before the answer
        _flag_exposures_insert(environment, unit_id, served, now)
    counts = {(flag_id, variation, day): (1, now) for flag_id, _, variation in served}
    flag_usage_buffer(environment.pk, counts)


def tracked_event_id(
    environment_id: int, flag: str, unit_id: str, variation: str, at: datetime
) -> str:
    """The event id of a tracked evaluation: equal within a minute for the same unit, flag and
    variation (see the module docstring)."""
    minute = at.strftime("%Y%m%d%H%M")
    text = "\x1f".join((str(environment_id), flag, unit_id, variation, minute))
    return TRACKED_ID_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:40]


# PostgreSQL: the ids go through the event-id ledger first, in key order (assignments/copy.py).
_TRACKED_PG = """
WITH served (event_id, flag_id, variation) AS (VALUES {values}),
fresh AS (
    INSERT INTO assignments_eventid (project_id, event_id, ts)
    SELECT %s, event_id, %s FROM served ORDER BY event_id COLLATE "C"
    ON CONFLICT (project_id, event_id) DO NOTHING
    RETURNING event_id
)
INSERT INTO assignments_flagexposure
    (project_id, event_id, environment_id, flag_id, variation, unit_id, ts, received_at)
SELECT %s, s.event_id, %s, s.flag_id, s.variation, %s, %s, %s
FROM served s JOIN fresh f ON f.event_id = s.event_id
"""


def _flag_exposures_insert(
    environment: Environment, unit_id: str, served: list[tuple[int, str, str]], now: datetime
) -> None:
    """One INSERT of the evaluation's flag exposures; already stored ids are skipped."""
    rows = sorted(
        (tracked_event_id(environment.pk, key, unit_id, variation, now), flag_id, variation)
        for flag_id, key, variation in served
    )
    project_id = environment.project_id
    ts = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                _TRACKED_PG.format(
                    values=", ".join(["(%s::varchar, %s::bigint, %s::varchar)"] * len(rows))
                ),
                [
                    *(x for row in rows for x in row),
                    project_id,
                    ts,
                    project_id,
                    environment.pk,
                    unit_id,
                    ts,
                    ts,
                ],
            )
            return
        cursor.execute(
            "INSERT INTO assignments_flagexposure (project_id, event_id, environment_id, "
            "flag_id, variation, unit_id, ts, received_at) VALUES "
            + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
            + " ON CONFLICT (project_id, event_id) DO NOTHING",
            [
                x
                for event_id, flag_id, variation in rows
                for x in (project_id, event_id, environment.pk, flag_id, variation, unit_id, ts, ts)
            ],
        )
