"""The per-variant sums kept with the stored per-unit aggregates (analysis/incremental.py): per
(variant id, state) the number of exposed units' rows and, per metric slot, the sums
``analysis.sql.incremental.sums`` lists. Each write of rows adds what it changed, so a snapshot
reads a few numbers instead of every row (``AggregateState.sums``, JSON text)."""

import json
from collections.abc import Sequence
from typing import Any

from analysis import aggregation
from analysis.aggregation import MetricSpec
from analysis.sql.builders import CLEAN
from analysis.sql.incremental import SUMS_PER_SLOT
from stats import SampleStats


class Sums:
    """Per (variant id, state): n, then per slot v, v², x, x², v·x and the rows where v and x
    are not 0 (``SUMS_PER_SLOT``)."""

    def __init__(self, by_group: dict[tuple[int, int], list[float]] | None = None) -> None:
        self.by_group = by_group or {}

    @classmethod
    def load(cls, text: str) -> "Sums":
        data = json.loads(text or "{}")
        return cls({tuple(map(int, k.split(":"))): v for k, v in data.items()})  # type: ignore[misc]

    def dump(self) -> str:
        return json.dumps({f"{v}:{st}": sums for (v, st), sums in self.by_group.items()})

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> "Sums":
        sums = cls()
        sums.add(rows)
        return sums

    @staticmethod
    def of_rows(rows: Sequence[Sequence[Any]], binary: Sequence[bool]) -> list[list[Any]]:
        """(variant, state, t0, v0, x0, v1, x1, ...) rows -> per (variant, state) the sums
        ``sql.stored_sums_sql`` gives (``binary``: slots read as 0 or 1)."""
        out: dict[tuple[int, int], list[float]] = {}
        for row in rows:
            if row[2] is None:
                continue
            sums = out.setdefault(
                (int(row[0]), int(row[1])), [0.0] * (1 + SUMS_PER_SLOT * len(binary))
            )
            sums[0] += 1
            for i, flag in enumerate(binary):
                v, x = float(row[3 + 2 * i]), float(row[4 + 2 * i])
                if flag:
                    v, x = float(v > 0), float(x > 0)
                for j, value in enumerate((v, v * v, x, x * x, v * x, v != 0, x != 0)):
                    sums[1 + SUMS_PER_SLOT * i + j] += value
        return [[v, st, *sums] for (v, st), sums in out.items()]

    def add(self, rows: Sequence[Sequence[Any]], sign: int = 1) -> None:
        """Add (variant, state, values...) rows, or take them away (``sign`` -1)."""
        for row in rows:
            key = (int(row[0]), int(row[1]))
            values = [float(x or 0) for x in row[2:]]
            current = self.by_group.setdefault(key, [0.0] * len(values))
            self.by_group[key] = [a + sign * b for a, b in zip(current, values, strict=True)]

    def add_written(self, rows: Sequence[Sequence[Any]]) -> int:
        """Add ``sums_of_returned`` rows; returns how many rows were written."""
        self.add([row[:-1] for row in rows])
        return sum(int(row[-1]) for row in rows)

    def units(self) -> int:
        return int(sum(sums[0] for sums in self.by_group.values()))

    def counts(self) -> aggregation.ExposureCounts:
        rows = [(v, st, round(sums[0])) for (v, st), sums in self.by_group.items()]
        return aggregation.counts_of([r for r in rows if r[2]])

    def clean_units(self) -> int:
        return sum(round(sums[0]) for (_, state), sums in self.by_group.items() if state == CLEAN)

    def stats(
        self, slot: int, metric: MetricSpec, taken: dict[int, list[float]] | None = None
    ) -> dict[int, SampleStats]:
        """The metric's per-variant statistics from its slot, as the full statement gives
        them (analysed units only; a sum whose rows are all 0 is exactly 0), less what
        winsorization takes off per variant (``taken``: v, v², x, x², v·x)."""
        out: dict[int, SampleStats] = {}
        for (variant, state), sums in sorted(self.by_group.items()):
            n = round(sums[0])
            if state != CLEAN or n <= 0:
                continue
            base = 1 + SUMS_PER_SLOT * slot
            sv, svv, sx, sxx, svx, nzv, nzx = sums[base : base + SUMS_PER_SLOT]
            if round(nzv) == 0:
                sv = svv = svx = 0.0
            if round(nzx) == 0:
                sx = sxx = svx = 0.0
            if taken and variant in taken:
                off = taken[variant]
                sv, svv, sx, sxx, svx = (
                    sv - off[0],
                    svv - off[1],
                    sx - off[2],
                    sxx - off[3],
                    svx - off[4],
                )
            if metric.kind == "ratio":
                extra = {"den_sum": sx, "den_sum_sq": sxx, "sum_prod": svx}
            elif metric.cuped:
                extra = {"cov_sum": sx, "cov_sum_sq": sxx, "cov_sum_prod": svx}
            else:
                extra = {}
            out[variant] = SampleStats(n=n, sum=sv, sum_sq=svv, **extra)
        return out
