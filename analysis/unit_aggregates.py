"""The stored per-unit aggregates of the incremental analysis (analysis/incremental.py), and the
state that says which events they hold. Re-exported by analysis/models.py.

``UnitAggregate``: one row per experiment and unit exposed in the current phase, holding what
the metrics statement's ``per_unit`` step computes for it (analysis/aggregation.py has the
rules): the unit's variant, state (analysed, multi-variant or assignment mismatch) and first
exposure t0 at the state's cut-off, and per metric slot its value (``v<slot>``) and its
denominator (ratio metrics) or CUPED covariate (the others) in ``x<slot>``. Winsorization is not
stored: the caps are computed at read time over these rows.

``AggregateState``: per experiment, what the rows were computed from: the phase start and the
metric definitions (``signature``; any change rebuilds them), the cut-off, and the watermarks:
every exposure and metric event with an id at or below them, and none above, is in the rows.
"""

from django.db import models

from experiments.models import Experiment

SLOTS = 16  # metrics stored per experiment; more fall back to the full statement


class AggregateState(models.Model):
    experiment = models.OneToOneField(
        Experiment, on_delete=models.CASCADE, related_name="aggregate_state"
    )
    signature = models.CharField(max_length=64)  # sha256 of the phase start and the metrics
    metrics = models.JSONField(default=list)  # the metric definitions, in slot order
    since = models.DateTimeField()
    through = models.DateTimeField()  # the cut-off the rows are computed at
    exposure_watermark = models.BigIntegerField(default=0)
    event_watermark = models.BigIntegerField(default=0)
    # Watermarks not yet safe (PostgreSQL): [{"exposure": id, "event": id, "writers": [...]}],
    # each safe once its writers (transactions then writing the event tables) have ended.
    candidates = models.JSONField(default=list)
    # Per "<variant id>:<state>" the sums of the rows of exposed units (JSON text, floats kept
    # exactly): n, then per slot analysis.sql.incremental.sums; kept up to date with the rows.
    sums = models.TextField(default="{}")
    sums_age = models.BigIntegerField(default=0)  # rows written since the sums were summed anew
    # Exposures of the experiment stamped before the phase start, ids up to the watermark (the
    # run's pre-start check, without counting every exposure at each snapshot).
    pre_start = models.BigIntegerField(default=0)
    ready = models.BooleanField(default=False)  # False while a rebuild fills the rows
    generation = models.PositiveIntegerField(default=0)  # one more per rebuild
    rebuilt_at = models.DateTimeField(null=True, blank=True)
    # Per winsorized column ("<column code>": value): the threshold of UnitAggregateTop, set
    # from the previous snapshot's cap (PostgreSQL); none until a snapshot has a cap.
    thresholds = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"aggregates of experiment {self.experiment_id} through {self.through}"


class UnitAggregateMark(models.Model):
    """Present while the experiment's rows in the unlogged table are those of rebuild
    ``generation`` (written when the rebuild ends; gone with the rows after a crash)."""

    experiment = models.OneToOneField(
        Experiment, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    generation = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"aggregates of experiment {self.experiment_id}: rebuild {self.generation}"


class UnitAggregateProgress(models.Model):
    """The event watermark up to which shard ``shard`` of an experiment's rows has added the
    new events, written in the shard's own transaction (analysis/incremental_shards.py: a
    refresh adds the events of shards 1, 2, ... on connections of their own, in parallel with
    its own). Normally equal to or below the state's watermark; above it, a refresh committed
    a shard's events and then failed before its own commit, and the next refresh rebuilds the
    rows. Unlogged like them."""

    pk = models.CompositePrimaryKey("experiment", "shard")
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    shard = models.SmallIntegerField()
    event_watermark = models.BigIntegerField()

    def __str__(self) -> str:
        return f"aggregates of experiment {self.experiment_id}, shard {self.shard}"


class UnitAggregateTop(models.Model):
    """The analysed units (exposed by the cut-off, to one variant, without a mismatch) whose
    stored value of a winsorized metric's column is at or above the column's threshold
    (``AggregateState.thresholds``), with their variant and the column's slot's stored ``v``
    and ``x``, equal to their row's: the snapshot's read takes a cap (a high quantile) and
    what capping takes off from these rows alone, instead of scanning every row. ``code`` is
    the stored column's code: 2 * slot, plus 1 for the ``x`` column. Kept by every write of
    the rows (analysis/incremental.py; PostgreSQL); unlogged like them."""

    pk = models.CompositePrimaryKey("experiment", "code", "unit_id")
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    code = models.SmallIntegerField()
    unit_id = models.CharField(max_length=200)  # PostgreSQL: collation "C" (migration 0012)
    variant_id = models.BigIntegerField(null=True)
    v = models.FloatField(null=True)
    x = models.FloatField(null=True)

    def __str__(self) -> str:
        return f"{self.experiment_id}:{self.code}:{self.unit_id}"


class UnitAggregate(models.Model):
    # The unique (experiment, unit_id) index leads with the experiment: no index of its own.
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    unit_id = models.CharField(max_length=200)  # PostgreSQL: collation "C" (migration 0012)
    variant_id = models.BigIntegerField(null=True)  # no foreign key: one check less per write
    state = models.SmallIntegerField(null=True)  # analysis.sql.builders CLEAN | MULTI_VARIANT...
    t0 = models.DateTimeField(null=True)  # NULL: no exposure by the cut-off yet
    # The earliest timestamp after the cut-off of a stored exposure or in-window event of the
    # unit: a later cut-off past it recomputes the unit.
    pending = models.DateTimeField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "unit_id"], name="unitaggregate_unit"),
        ]
        indexes = [
            models.Index(
                fields=["experiment", "pending"],
                condition=models.Q(pending__isnull=False),
                name="unitaggregate_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id}:{self.unit_id}"


for _slot in range(SLOTS):
    UnitAggregate.add_to_class(f"v{_slot}", models.FloatField(null=True))
    UnitAggregate.add_to_class(f"x{_slot}", models.FloatField(null=True))
