"""Stored assignments of returning units, cached so that ``/assign`` answers them without a
database round trip: unit -> variant, per experiment and phase.

A stored assignment never changes: the unique ``(experiment, unit)`` row decides every race,
nothing updates it, and it goes only with its experiment. So a cached one stays exact as long as
its key names the experiment's incarnation (``ProjectSpecs.assignment_tags``: the experiment's
id, its creation time, since the ids of a deleted or rolled-back experiment may come back, and
its phase). What
an experiment serves is decided before the cache is asked: a paused, rolled-back or concluded
experiment answers without it, targeting is applied on every request, and a new phase reads the
database once (the product keeps a unit's variant across phases) and caches it under the new tag.

Entries are written when ``/assign`` stores an assignment (after the commit) and when a lookup
reads one from the database (also those that ingestion stored). Units without an assignment are
never cached: another process may store one at any time.

Two tiers: this process's LRU (`LOCAL_UNITS` entries) and, when the shared cache is Redis,
Redis itself (every process and machine; entries live `SHARED_SECONDS`, one ``MGET`` per
request). A miss in both reads the database.
"""

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from django.db import transaction

from core.cache import shared_get_many, shared_set_many

LOCAL_UNITS = 200_000  # per process: about 40 MB at most
SHARED_SECONDS = 24 * 3600  # a unit back after a day costs one database read

Pair = tuple[str, str]  # (assignment tag, unit id)

_local: OrderedDict[Pair, int] = OrderedDict()
_lock = threading.Lock()


def _shared_key(pair: Pair) -> str:
    # Unit ids are free text up to 200 characters: a digest keeps keys short and plain.
    digest = hashlib.blake2b(pair[1].encode(), digest_size=16).hexdigest()
    return f"asg:{pair[0]}:{digest}"


def cached_variants(pairs: Iterable[Pair]) -> dict[Pair, int]:
    """The cached variant id of each pair that has one (this process first, then Redis)."""
    found: dict[Pair, int] = {}
    missing: list[Pair] = []
    with _lock:
        for pair in pairs:
            variant_id = _local.get(pair)
            if variant_id is None:
                missing.append(pair)
            else:
                _local.move_to_end(pair)
                found[pair] = variant_id
    if missing:
        keys = {_shared_key(pair): pair for pair in missing}
        shared = shared_get_many(list(keys))
        if shared:
            hits = {keys[key]: variant_id for key, variant_id in shared.items()}
            _keep_local(hits)
            found.update(hits)
    return found


def remember_variants(variants: Mapping[Pair, int], *, shared: bool = True) -> None:
    """Cache stored assignments: in this process, and in Redis unless ``shared`` is False."""
    if not variants:
        return
    _keep_local(variants)
    if shared:
        shared_set_many({_shared_key(p): v for p, v in variants.items()}, SHARED_SECONDS)


def remember_stored_variants(variants: Mapping[Pair, int]) -> None:
    """Cache assignments this transaction stores, once it commits (at once in autocommit)."""
    if variants:
        transaction.on_commit(lambda: remember_variants(variants))


def _keep_local(variants: Mapping[Pair, int]) -> None:
    with _lock:
        _local.update(variants)
        for pair in variants:
            _local.move_to_end(pair)
        while len(_local) > LOCAL_UNITS:
            _local.popitem(last=False)


def forget_all() -> None:
    """Empty this process's tier (tests)."""
    with _lock:
        _local.clear()
