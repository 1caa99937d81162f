"""Writes on the service hot path: sticky assignment and batch event ingestion, and the removal
of bad events.

Assignment and ingestion run per request for many units or events, so they skip per-row ORM work
on purpose (no model instances, no ``full_clean``): the APIs check the request's shape, these
functions check every rule row by row, and the rows reach the database in one statement per
batch.

- `assign`: ``assignments_get_or_create`` (sticky assignment, one unit or many);
- `validate`: ``events_validate``, the rules of an event, and the batch it builds;
- `ingest`: ``events_ingest``, storing a validated batch (COPY on PostgreSQL, ``INSERT OR
  IGNORE`` elsewhere);
- `delete`: ``events_delete``;
- `evaluate`: ``flags_evaluate``, server-side flag evaluation (``POST /evaluate``);
- `flag_usage`: ``flag_usage_add``, the flags' evaluation counts;
- `usage_buffer`: ``flag_usage_flush``, the per-process buffer of ``/evaluate``'s counts;
- `assignment_rows`: the raw SQL that reads and inserts assignments, shared by the first two.

Callers import from this package; the names below are its public interface.
"""

from assignments.services.assign import Answer, Unit, assignments_get_or_create
from assignments.services.delete import (
    EVENT_TYPES,
    MAX_DELETE_FILTER_ITEMS,
    EventDeletion,
    events_delete,
)
from assignments.services.evaluate import (
    MAX_EVALUATE_FLAGS,
    Evaluation,
    evaluation_environment,
    flags_evaluate,
)
from assignments.services.flag_usage import flag_usage_add
from assignments.services.ingest import MAX_BATCH, events_ingest
from assignments.services.retention import (
    MaintenanceReport,
    event_storage_maintain,
    orphan_partitions_drop,
)
from assignments.services.usage_buffer import flag_usage_flush
from assignments.services.validate import (
    EARLIEST_TIMESTAMP,
    LATEST_EPOCH_SECONDS,
    MAX_ATTRIBUTES_BYTES,
    MAX_ATTRIBUTES_DEPTH,
    MAX_CLOCK_SKEW,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PROPERTIES_BYTES,
    MAX_TIMESTAMP_LENGTH,
    EventBatch,
    ExposureRow,
    FlagExposureRow,
    FlagTargets,
    IngestResult,
    MetricRow,
    events_validate,
    max_event_value,
)

__all__ = [
    "MaintenanceReport",
    "event_storage_maintain",
    "orphan_partitions_drop",
    "EARLIEST_TIMESTAMP",
    "EVENT_TYPES",
    "LATEST_EPOCH_SECONDS",
    "MAX_ATTRIBUTES_BYTES",
    "MAX_ATTRIBUTES_DEPTH",
    "MAX_BATCH",
    "MAX_CLOCK_SKEW",
    "MAX_DELETE_FILTER_ITEMS",
    "MAX_EVALUATE_FLAGS",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PROPERTIES_BYTES",
    "MAX_TIMESTAMP_LENGTH",
    "Answer",
    "EventBatch",
    "EventDeletion",
    "Evaluation",
    "ExposureRow",
    "FlagExposureRow",
    "FlagTargets",
    "IngestResult",
    "MetricRow",
    "Unit",
    "assignments_get_or_create",
    "events_delete",
    "events_ingest",
    "evaluation_environment",
    "events_validate",
    "flag_usage_add",
    "flag_usage_flush",
    "flags_evaluate",
    "max_event_value",
]
