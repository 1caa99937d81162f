"""Web UI for flags, segments and change requests, under /p/<project>/.

Every page resolves the project for the user (404 for a project they are not in) and checks
their role (403 with a page that says why). Views parse a form, call one service
(flags.services, or experiments.services for segments) and render; a service's DomainError is
shown next to the field it names, a PermissionDenied as a message (never a 500). Production
changes may come back as a change request, which the page says.

One module per page family: ``flags`` (list, toggles, form), ``detail`` (the flag page:
preview, schedules, usage, audit), ``rules`` (the rules editor), ``segments``,
``change_requests``; ``reads`` holds what the pages read beyond the selectors.
"""

from flags.views.change_requests import change_request_action, change_request_list
from flags.views.detail import flag_detail, scheduled_change_cancel, scheduled_change_create
from flags.views.environments import environment_browser, environment_create
from flags.views.flags import flag_archive, flag_edit, flag_list, flag_new, flag_toggle
from flags.views.rules import flag_rules
from flags.views.segments import segment_delete, segment_edit, segment_list, segment_new

__all__ = [
    "environment_browser",
    "environment_create",
    "change_request_action",
    "change_request_list",
    "flag_archive",
    "flag_detail",
    "flag_edit",
    "flag_list",
    "flag_new",
    "flag_rules",
    "flag_toggle",
    "scheduled_change_cancel",
    "scheduled_change_create",
    "segment_delete",
    "segment_edit",
    "segment_list",
    "segment_new",
]
