"""Sending a Celery task from work that has already committed (``transaction.on_commit``).

The caller's transaction is done, so a broker outage must not raise into it: the failure is
logged, and whatever stored the work (a pending delivery, a project's partitions) leaves it for
a sweep or the next scheduled round to queue again.
"""

import logging
from typing import Any

logger = logging.getLogger(__name__)


def send_quietly(task: Any, *args: Any, unsent: str) -> bool:
    """``task.delay(*args)``; on failure log ``unsent`` (what is left behind, and who picks it
    up) with the exception and return False."""
    try:
        task.delay(*args)
    except Exception:
        logger.exception("%s", unsent)
        return False
    return True
