"""Web UI for product managers: experiments, metric catalog, project settings.

Every page resolves the project for the user (404 for a project they are not in) and checks
their role (403 with a page that says why). Views parse a form, call one service and render;
a service's DomainError is shown next to the field it names.

One module per page family (``experiments``, ``metrics``, ``holdouts``, ``projects``; what they
share in ``pages``); the URL conf (experiments/urls.py) imports the views from the package.
"""

from experiments.views.experiments import (
    LIFECYCLE_DONE,
    experiment_action,
    experiment_detail,
    experiment_edit,
    experiment_list,
    experiment_new,
)
from experiments.views.holdouts import holdout_action, holdout_edit, holdout_new, holdout_remove
from experiments.views.layers import layer_list
from experiments.views.metrics import metric_delete, metric_edit, metric_list, metric_new
from experiments.views.pages import PERMISSION_WORDS, Page, percent, project_page
from experiments.views.projects import (
    api_key_create,
    api_key_revoke,
    home,
    member_add,
    member_remove,
    member_role,
    project_settings,
    project_settings_update,
    webhook_secret_action,
)

__all__ = [
    "LIFECYCLE_DONE",
    "PERMISSION_WORDS",
    "Page",
    "api_key_create",
    "api_key_revoke",
    "experiment_action",
    "experiment_detail",
    "experiment_edit",
    "experiment_list",
    "experiment_new",
    "holdout_action",
    "holdout_edit",
    "holdout_new",
    "holdout_remove",
    "home",
    "layer_list",
    "member_add",
    "member_remove",
    "member_role",
    "metric_delete",
    "metric_edit",
    "metric_list",
    "metric_new",
    "percent",
    "project_page",
    "project_settings",
    "project_settings_update",
    "webhook_secret_action",
]
