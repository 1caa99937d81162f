"""The running holdout's exposures: which units of the holdout, and of the equal-sized general
sample, a serving path saw, and when first (the comparison's denominators, docs/analysts.md
"Holdouts"). Recorded by ``/assign`` and ``/assign/bulk`` for every unit asked about, and for
every flag exposure stored in production (posted, or tracked by ``/evaluate``): paths that see
a unit whether or not it is in the holdout, so neither arm is favoured. Experiment exposures do
not count: the holdout's units never have any."""

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime

from django.db import connection
from django.utils import timezone

from assignments.models import HoldoutArm
from bucketing.holdout import GENERAL, HOLDOUT, arms_many
from experiments.holdouts import ServedHoldout

ARM_CODES = {HOLDOUT: HoldoutArm.HOLDOUT.value, GENERAL: HoldoutArm.GENERAL.value}
_ROWS_PER_STATEMENT = 1000  # 4 parameters a row: well under SQLite's bound-parameter limit
# Units this process recorded as seen "now" per holdout (its id and start, so that a holdout
# given an id again starts afresh): seen again later, nothing can change (the first time
# stays), so returning units cost no write. Bounded: forgotten all at once when full.
_SEEN_MAX = 100_000
_seen: dict[tuple[int, datetime], set[str]] = {}
_seen_size = 0
_seen_lock = threading.Lock()


def holdout_exposures_record(
    *, holdout: ServedHoldout, units: Iterable[tuple[str, datetime]]
) -> int:
    """Store ``(unit id, seen at)`` for the units in either arm, seen since the holdout started:
    one row per unit, keeping the earliest time (a late event moves it back). Returns how many
    rows were written (new or moved back). One statement per 1,000 units, rows in unit order so
    concurrent writers cannot deadlock."""
    first: dict[str, datetime] = {}
    for unit_id, at in units:
        if at >= holdout.started_at and (unit_id not in first or at < first[unit_id]):
            first[unit_id] = at
    if not first:
        return 0
    ids = sorted(first)
    adapt = connection.ops.adapt_datetimefield_value
    rows = [
        (holdout.id, unit_id, ARM_CODES[arm], adapt(first[unit_id]))
        for unit_id, arm in zip(ids, arms_many(holdout.spec, ids), strict=True)
        if arm is not None
    ]
    written = 0
    with connection.cursor() as cursor:
        for lo in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[lo : lo + _ROWS_PER_STATEMENT]
            cursor.execute(
                "INSERT INTO assignments_holdoutexposure (holdout_id, unit_id, arm, ts) VALUES "
                + ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
                + " ON CONFLICT (holdout_id, unit_id) DO UPDATE SET ts = excluded.ts"
                " WHERE excluded.ts < assignments_holdoutexposure.ts",
                [x for row in chunk for x in row],
            )
            written += max(cursor.rowcount, 0)
    return written


def holdout_exposures_seen_now(*, holdout: ServedHoldout, unit_ids: Sequence[str]) -> set[str]:
    """The serving paths' call (``/assign``, tracked ``/evaluate``): record the units seen now
    that this process has not recorded yet, and return those in the holdout."""
    global _seen_size
    ids = list(dict.fromkeys(unit_ids))
    arms = dict(zip(ids, arms_many(holdout.spec, ids), strict=True))
    key = (holdout.id, holdout.started_at)
    seen = _seen.get(key, set())
    fresh = [u for u in ids if arms[u] is not None and u not in seen]
    if fresh:
        now = timezone.now()
        holdout_exposures_record(holdout=holdout, units=[(u, now) for u in fresh])
        with _seen_lock:
            if _seen_size + len(fresh) > _SEEN_MAX:
                _seen.clear()
                _seen_size = 0
            _seen.setdefault(key, set()).update(fresh)
            _seen_size += len(fresh)
    return {u for u in ids if arms[u] == HOLDOUT}
