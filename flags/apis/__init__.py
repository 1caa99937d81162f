"""REST API for people (session or token auth): flags, environments, segments, change
requests and scheduled changes (docs/flags.md). Same roles as the experiments API; the
services add the production rule."""

from flags.apis.flags import (
    FlagDetailApi,
    FlagListApi,
    FlagToggleApi,
    ScheduleDetailApi,
    ScheduleListApi,
)
from flags.apis.projects import (
    ChangeRequestActionApi,
    ChangeRequestListApi,
    EnvironmentBrowserApi,
    EnvironmentBrowserRotateApi,
    EnvironmentListApi,
    SegmentDetailApi,
    SegmentListApi,
)

__all__ = [
    "ChangeRequestActionApi",
    "ChangeRequestListApi",
    "EnvironmentBrowserApi",
    "EnvironmentBrowserRotateApi",
    "EnvironmentListApi",
    "FlagDetailApi",
    "FlagListApi",
    "FlagToggleApi",
    "ScheduleDetailApi",
    "ScheduleListApi",
    "SegmentDetailApi",
    "SegmentListApi",
]
