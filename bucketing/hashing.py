"""Deterministic bucketing of units into variants, bit-compatible with GrowthBook's SDKs.

Spec (GrowthBook SDK spec, `hash` / `getBucketRanges` / `chooseVariation` / `inNamespace`):

- ``fnv1a32(s)``: 32-bit FNV-1a (offset basis 0x811C9DC5, prime 0x01000193) over the string's
  UTF-16 code units, like the JS SDK's ``charCodeAt`` loop and the official Python SDK (for ASCII
  this is the same as hashing the UTF-8 bytes).
- ``gb_hash(seed, value, 2) = fnv1a32(str(fnv1a32(seed + value))) % 10000 / 10000``: a number in
  ``[0, 1)`` with four decimals. Version 1, kept for namespaces and old payloads, is
  ``fnv1a32(value + seed) % 1000 / 1000``. Any other version gives ``None``.
- ``get_bucket_ranges(weights, coverage)``: coverage is clamped to ``[0, 1]``; weights that are not
  one finite, non-negative number per variant summing to within ``[0.99, 1.01]`` are replaced by
  equal weights (the SDK's rule); variant ``i`` owns ``[start_i, start_i + coverage * w_i)`` where
  ``start_i`` is the sum of the earlier weights. Ranges start where they would at full coverage, so
  raising coverage only adds units: nobody already in moves.
- ``choose_variant(n, ranges)``: the first range with ``start <= n < end``, else ``-1`` (not in the
  experiment).
- ``in_namespace(unit, (id, start, end))``: ``start <= gb_hash("__" + id, unit, 1) < end``, so
  experiments in one namespace with disjoint ``[start, end)`` never share a unit.

`Bucketer` precomputes everything that depends only on the experiment (the FNV state after the
seed, the ranges) so the per-unit hot path is a tight integer loop with no allocations beyond the
unit's bytes.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

FNV32_OFFSET = 0x811C9DC5
FNV32_PRIME = 0x01000193
_MASK32 = 0xFFFFFFFF
# Below this many code units the loop skips masking: Python's small multi-limb integers are
# cheaper than a mask per step. Longer ids are masked per chunk so the integers stay small.
_UNMASKED_RUN = 48

WEIGHT_SUM_MIN = 0.99
WEIGHT_SUM_MAX = 1.01

Range = tuple[float, float]


def _code_units(s: str) -> bytes | array:
    """The UTF-16 code units the SDK hashes (the bytes themselves for ASCII)."""
    if s.isascii():
        return s.encode()
    units = array("H", s.encode("utf-16-le", "surrogatepass"))
    if sys.byteorder == "big":
        units.byteswap()
    return units


def fnv1a32(s: str, state: int = FNV32_OFFSET) -> int:
    """FNV-1a 32-bit of ``s``; pass ``state`` to continue a hash (``fnv1a32(b, fnv1a32(a))``
    equals ``fnv1a32(a + b)``)."""
    return _fnv_units(_code_units(s), state)


def _fnv_units(units: bytes | array, h: int) -> int:
    p = FNV32_PRIME
    mask = _MASK32
    if len(units) <= _UNMASKED_RUN:
        # (x mod 2**32) * p and (x mod 2**32) ^ c only depend on x mod 2**32: mask once at the end.
        for c in units:
            h = (h ^ c) * p
        return h & mask
    for i in range(0, len(units), _UNMASKED_RUN):
        for c in units[i : i + _UNMASKED_RUN]:
            h = (h ^ c) * p
        h &= mask
    return h


def gb_hash(seed: str, value: str, version: int = 2) -> float | None:
    """GrowthBook's ``hash(seed, value, version)``: a number in [0, 1), or None for an unknown
    version."""
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def seed_state(seed: str) -> int:
    """The FNV state after hashing ``seed``: hashing a unit continues from here."""
    return fnv1a32(seed)


def hash_v2_from_state(state: int, value: str) -> float:
    """``gb_hash(seed, value, 2)`` given ``state = seed_state(seed)``: the hot path.

    Every assignment runs through here, so it is written for CPython's interpreter: locals only,
    no masking inside short loops, no intermediate strings.
    """
    p = FNV32_PRIME
    if value.isascii() and len(value) <= _UNMASKED_RUN:
        h = state
        for c in value.encode():
            h = (h ^ c) * p
        h &= _MASK32
    else:
        h = _fnv_units(_code_units(value), state)
    h2 = FNV32_OFFSET
    for c in b"%d" % h:
        h2 = (h2 ^ c) * p
    return ((h2 & _MASK32) % 10000) / 10000


def js_number_to_string(value: int | float) -> str:
    """A number formatted like JS ``String(number)`` (shortest round-trip digits, JS exponents)."""
    try:
        x = float(value)
    except OverflowError:
        x = math.inf if value > 0 else -math.inf
    if math.isnan(x):
        return "NaN"
    if x == 0:
        return "0"
    if x < 0:
        return "-" + js_number_to_string(-x)
    if math.isinf(x):
        return "Infinity"
    mantissa, _, exp = repr(x).partition("e")
    whole, _, fraction = mantissa.partition(".")
    padded = (whole + fraction).lstrip("0")
    digits = padded.rstrip("0")
    k = len(digits)
    n = int(exp or "0") - len(fraction) + len(padded)  # x = 0.d1..dk * 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return head + "e" + ("+" if n > 0 else "-") + str(abs(n - 1))


def hash_string(value: Any) -> str:
    """The string the SDK hashes for an attribute value: ``""`` (no hash, not in any experiment)
    unless it is a non-empty string or a finite, non-zero number (formatted like JS)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    try:
        if value == 0 or not math.isfinite(value):
            return ""
    except OverflowError:  # an int too large for a double is Infinity in JS
        return ""
    return js_number_to_string(value)


def get_equal_weights(num_variants: int) -> list[float]:
    """``1 / n`` for each of ``n`` variants (empty for ``n < 1``), like the SDK."""
    if num_variants < 1:
        return []
    return [1 / num_variants] * num_variants


def _is_valid_weight_vector(weights: Any, num_variants: int) -> bool:
    if weights is None or len(weights) != num_variants:
        return False
    try:
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, int | float):
                return False
            if not math.isfinite(w) or w < 0:
                return False
        return WEIGHT_SUM_MIN <= sum(weights) <= WEIGHT_SUM_MAX
    except OverflowError:
        return False


def effective_weights(weights: Sequence[float] | None, num_variants: int) -> list[float]:
    """The weights bucketing uses: ``weights`` if valid for ``num_variants``, else equal ones."""
    if _is_valid_weight_vector(weights, num_variants):
        return list(weights)  # type: ignore[arg-type]
    return get_equal_weights(num_variants)


def get_bucket_ranges(
    weights: Sequence[float] | None,
    coverage: float = 1.0,
    num_variants: int | None = None,
) -> list[Range]:
    """The SDK's ``getBucketRanges(num_variants, coverage, weights)``.

    ``num_variants`` defaults to ``len(weights)``; a ``weights`` of the wrong length, out of the
    sum tolerance or with a negative entry falls back to equal weights.
    """
    if num_variants is None:
        if weights is None:
            raise ValueError("get_bucket_ranges needs weights or num_variants")
        num_variants = len(weights)
    coverage = min(max(coverage, 0), 1)
    cumulative: float = 0
    ranges = []
    for w in effective_weights(weights, num_variants):
        start = cumulative
        cumulative += w
        ranges.append((start, start + coverage * w))
    return ranges


def choose_variant(n: float, ranges: Sequence[Range]) -> int:
    """Index of the first range holding ``n`` (start inclusive, end exclusive), or -1."""
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def in_namespace(unit_id: str, namespace: Sequence[Any]) -> bool:
    """Whether ``unit_id`` falls in the namespace slice ``(id, start, end)``."""
    ns_id, start, end = namespace
    n = (fnv1a32(unit_id + "__" + ns_id) % 1000) / 1000
    return start <= n < end


class Bucketer:
    """One experiment's bucketing, precomputed: ``variant_index(unit)`` is the hot path.

    Equivalent to ``choose_variant(gb_hash(seed, unit, 2), get_bucket_ranges(weights, coverage))``
    with empty ranges dropped (they can hold no unit, so the answer is the same).
    """

    __slots__ = ("seed", "ranges", "_state", "_live")

    def __init__(
        self,
        seed: str,
        weights: Sequence[float] | None,
        coverage: float = 1.0,
        num_variants: int | None = None,
    ) -> None:
        self.seed = seed
        self.ranges = tuple(get_bucket_ranges(weights, coverage, num_variants))
        self._state = seed_state(seed)
        self._live = tuple((s, e, i) for i, (s, e) in enumerate(self.ranges) if s < e)

    def bucket(self, unit_id: str) -> float:
        return hash_v2_from_state(self._state, unit_id)

    def variant_index(self, unit_id: str) -> int:
        """The variant index for ``unit_id``, or -1 when it is outside the coverage."""
        n = hash_v2_from_state(self._state, unit_id)
        for start, end, i in self._live:
            if start <= n < end:
                return i
        return -1

    def assign_many(self, unit_ids: Sequence[str]) -> np.ndarray:
        """Variant index (or -1) for each unit, vectorised with numpy."""
        return choose_variant_many(bucket_many(self.seed, unit_ids), self.ranges)


# --- vectorised versions, for bulk assignment, simulations and statistical tests -----------------

_CHUNK = 1 << 16  # units per numpy pass: bounds memory at a few MB per pass


def _fnv_rows(codes: np.ndarray, lengths: np.ndarray, state: int) -> np.ndarray:
    """FNV-1a of each row of ``codes`` (code units, zero-padded) up to its length, from
    ``state``."""
    import numpy as np

    h = np.full(codes.shape[0], state, dtype=np.uint64)
    p = np.uint64(FNV32_PRIME)
    mask = np.uint64(_MASK32)
    for j in range(codes.shape[1]):
        stepped = ((h ^ codes[:, j].astype(np.uint64)) * p) & mask
        h = np.where(lengths > j, stepped, h)
    return h


def _fnv_many(strings: list[str], state: int) -> np.ndarray:
    """``fnv1a32(s, state)`` for each string, as a uint64 array."""
    import numpy as np

    out = np.empty(len(strings), dtype=np.uint64)
    for lo in range(0, len(strings), _CHUNK):
        chunk = strings[lo : lo + _CHUNK]
        # numpy stores str as UTF-32: equal to UTF-16 code units inside the BMP.
        codes = np.array(chunk, dtype=str).view(np.uint32).reshape(len(chunk), -1)
        if codes.size and codes.max() > 0xFFFF:
            out[lo : lo + len(chunk)] = [fnv1a32(s, state) for s in chunk]
            continue
        lengths = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
        out[lo : lo + len(chunk)] = _fnv_rows(codes, lengths, state)
    return out


def _fnv_of_decimal(h: np.ndarray) -> np.ndarray:
    """``fnv1a32(str(x))`` for each 32-bit ``x`` in ``h``."""
    import numpy as np

    powers = np.array([10**k for k in range(10)], dtype=np.uint64)
    ndigits = 1 + (h[:, None] >= powers[1:][None, :]).sum(axis=1)
    digits = np.zeros((len(h), 10), dtype=np.uint64)
    for j in range(10):
        exponent = np.clip(ndigits - 1 - j, 0, 9)
        digits[:, j] = (h // powers[exponent]) % np.uint64(10) + np.uint64(48)
    return _fnv_rows(digits, ndigits, FNV32_OFFSET)


def gb_hash_many(seed: str, values: Sequence[str], version: int = 2) -> np.ndarray:
    """``gb_hash(seed, v, version)`` for every value, as a float64 array (numpy, no Python
    arithmetic per value)."""
    import numpy as np

    values = list(values)
    if version == 2:
        h2 = _fnv_of_decimal(_fnv_many(values, seed_state(seed)))
        return (h2 % np.uint64(10000)).astype(np.float64) / 10000
    if version == 1:
        h = _fnv_many([v + seed for v in values], FNV32_OFFSET)
        return (h % np.uint64(1000)).astype(np.float64) / 1000
    raise ValueError(f"unknown hash version {version}")


def bucket_many(seed: str, unit_ids: Sequence[str]) -> np.ndarray:
    """``gb_hash(seed, u, 2)`` for every unit id."""
    return gb_hash_many(seed, unit_ids, 2)


def choose_variant_many(buckets: np.ndarray, ranges: Sequence[Range]) -> np.ndarray:
    """``choose_variant`` over an array of buckets: variant index or -1 per unit."""
    import numpy as np

    out = np.full(buckets.shape, -1, dtype=np.int64)
    for i, (start, end) in enumerate(ranges):
        hit = (out == -1) & (buckets >= start) & (buckets < end)
        out[hit] = i
    return out


def assign_many(
    seed: str, unit_ids: Sequence[str], weights: Sequence[float] | None, coverage: float = 1.0
) -> np.ndarray:
    """Variant index (or -1) for each unit of an experiment, vectorised."""
    return choose_variant_many(bucket_many(seed, unit_ids), get_bucket_ranges(weights, coverage))


def in_namespace_many(unit_ids: Sequence[str], namespace: Sequence[Any]) -> np.ndarray:
    """``in_namespace`` for each unit id, as a boolean array."""
    ns_id, start, end = namespace
    n = gb_hash_many("__" + ns_id, unit_ids, 1)
    return (n >= start) & (n < end)
