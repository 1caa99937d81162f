"""The results history API's page parameters: ``?page=`` (from 1) and ``?limit=``."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from analysis.history import HISTORY_PAGE_LIMIT, HISTORY_PAGE_MAX_LIMIT

# Far beyond any history (a snapshot per look), and small enough that the database's OFFSET
# (a 64-bit integer) cannot overflow: page 2**63 was a 500.
MAX_PAGE = 1_000_000


class HistoryPageQuery(serializers.Serializer):
    page = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=1)
    limit = serializers.IntegerField(
        min_value=1, max_value=HISTORY_PAGE_MAX_LIMIT, default=HISTORY_PAGE_LIMIT
    )


HISTORY_PAGE_PARAMETERS = [
    OpenApiParameter(
        "page", OpenApiTypes.INT, default=1, description=f"the page, from 1 to {MAX_PAGE:,}"
    ),
    OpenApiParameter(
        "limit",
        OpenApiTypes.INT,
        default=HISTORY_PAGE_LIMIT,
        description=f"snapshots per page, at most {HISTORY_PAGE_MAX_LIMIT}",
    ),
]
