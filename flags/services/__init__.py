"""Writes on flags, their per-environment configs, segments, environments, change requests
and scheduled changes. Every rule lives here and raises DomainError (a 400 naming the field)
or PermissionDenied (a role problem); every change is audited with before and after.

One module per domain; import from the package, which re-exports them all:

- ``rules``: validation of definitions and rules;
- ``flags``: create, update, delete flag definitions;
- ``environments``: a flag in one environment, the production rule, change requests, new
  environments;
- ``schedules``: scheduled changes and the beat's apply;
- ``segments``: saved audiences.
"""

from flags.services.environments import (
    change_request_cancel,
    change_request_create,
    change_request_review,
    config_snapshot,
    environment_create,
    flag_environment_update,
    flag_toggle,
)
from flags.services.flags import FLAG_FIELDS, flag_create, flag_delete, flag_snapshot, flag_update
from flags.services.rules import MAX_RULES, WEIGHT_TOLERANCE
from flags.services.schedules import (
    rollout_move,
    scheduled_change_cancel,
    scheduled_change_create,
    scheduled_changes_apply,
)
from flags.services.segments import (
    SEGMENT_FIELDS,
    segment_create,
    segment_delete,
    segment_update,
    segment_users,
)

__all__ = [
    "FLAG_FIELDS",
    "MAX_RULES",
    "SEGMENT_FIELDS",
    "WEIGHT_TOLERANCE",
    "change_request_cancel",
    "change_request_create",
    "change_request_review",
    "config_snapshot",
    "environment_create",
    "flag_create",
    "flag_delete",
    "flag_environment_update",
    "flag_snapshot",
    "flag_toggle",
    "flag_update",
    "rollout_move",
    "scheduled_change_cancel",
    "scheduled_change_create",
    "scheduled_changes_apply",
    "segment_create",
    "segment_delete",
    "segment_update",
    "segment_users",
]
