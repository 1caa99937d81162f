"""Signals the event tables send to the layers above them (which subscribe in their app
configs; this layer imports none of them)."""

from django.dispatch import Signal

# Sent after stored events were deleted (assignments.services.events_delete), in its
# transaction: ``project_id``, ``deleted`` (rows per table). Results computed from kept state
# (analysis/incremental.py) must recompute what they held of them.
events_deleted = Signal()
