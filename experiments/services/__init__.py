"""Writes on experiment definitions. Every state rule lives here and raises DomainError.

One module per domain; import from the package (``from experiments import services`` or
``from experiments.services import experiment_start``), which re-exports them all:

- ``projects``: projects, members, API keys, user tokens, settings, the webhook secret;
- ``browser``: environments' public browser keys and allowed origins (events from browsers);
- ``metrics``: the metric catalog;
- ``definitions``: create, update and delete experiments;
- ``lifecycle``: start, pause, resume, ramp, conclude, rollback;
- ``rules``: the ranges and validation rules those share;
- ``audit``: the audit log every write records to.
"""

from experiments.services.audit import audit_log_record
from experiments.services.browser import (
    check_origins,
    environment_browser_key_rotate,
    environment_browser_update,
)
from experiments.services.definitions import (
    EXPERIMENT_FIELDS,
    experiment_create,
    experiment_delete,
    experiment_snapshot,
    experiment_update,
)
from experiments.services.lifecycle import (
    experiment_conclude,
    experiment_pause,
    experiment_ramp,
    experiment_resume,
    experiment_rollback,
    experiment_start,
)
from experiments.services.metrics import (
    LIVE_STATUSES,
    METRIC_DEFINITION_FIELDS,
    METRIC_FIELDS,
    metric_create,
    metric_delete,
    metric_update,
)
from experiments.services.projects import (
    NO_ADDABLE_USER,
    PROJECT_CREATION_REFUSED,
    SLUG_NOT_AVAILABLE,
    USERNAME_NOT_AVAILABLE,
    CreatedApiKey,
    CreatedUserToken,
    api_key_create,
    api_key_revoke,
    environments_create_defaults,
    hash_api_secret,
    membership_add,
    membership_remove,
    membership_set,
    project_create,
    project_creation_allowed,
    project_update,
    project_webhook_secret_reveal,
    project_webhook_secret_rotate,
    user_token_create,
    user_tokens_revoke,
    webhook_url_check,
)
from experiments.services.rules import (
    ALPHA_MAX,
    ALPHA_MIN,
    FINISHED,
    FROZEN_WHEN_LIVE,
    MARGIN_MAX,
    MAX_CONVERSION_WINDOW_HOURS,
    MAX_MDE,
    MAX_PLANNED_SAMPLE_SIZE,
    MAX_RAMP_STAGE_HOURS,
    MAX_TAGS,
    RATIONALE_MAX,
    TAG_MAX,
    WEIGHT_TOLERANCE,
    check_tags,
)

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "EXPERIMENT_FIELDS",
    "FINISHED",
    "FROZEN_WHEN_LIVE",
    "LIVE_STATUSES",
    "MAX_CONVERSION_WINDOW_HOURS",
    "MAX_MDE",
    "MAX_PLANNED_SAMPLE_SIZE",
    "MAX_RAMP_STAGE_HOURS",
    "MAX_TAGS",
    "RATIONALE_MAX",
    "TAG_MAX",
    "check_tags",
    "MARGIN_MAX",
    "METRIC_DEFINITION_FIELDS",
    "METRIC_FIELDS",
    "NO_ADDABLE_USER",
    "PROJECT_CREATION_REFUSED",
    "SLUG_NOT_AVAILABLE",
    "USERNAME_NOT_AVAILABLE",
    "WEIGHT_TOLERANCE",
    "CreatedApiKey",
    "CreatedUserToken",
    "api_key_create",
    "environments_create_defaults",
    "api_key_revoke",
    "audit_log_record",
    "check_origins",
    "environment_browser_key_rotate",
    "environment_browser_update",
    "experiment_conclude",
    "experiment_create",
    "experiment_delete",
    "experiment_pause",
    "experiment_ramp",
    "experiment_resume",
    "experiment_rollback",
    "experiment_snapshot",
    "experiment_start",
    "experiment_update",
    "hash_api_secret",
    "membership_add",
    "membership_remove",
    "membership_set",
    "metric_create",
    "metric_delete",
    "metric_update",
    "project_create",
    "project_creation_allowed",
    "project_update",
    "project_webhook_secret_reveal",
    "project_webhook_secret_rotate",
    "user_token_create",
    "user_tokens_revoke",
    "webhook_url_check",
]
