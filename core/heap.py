"""A worker's heap after startup: collected once, then frozen (``gc.freeze``).

A worker process imports Django, numpy, scipy and every app before its first task: hundreds of
thousands of objects that live as long as the process. Python's cyclic garbage collector walks
every tracked object at each collection of its oldest generation, and a task that allocates
many objects (a snapshot's read fetches 15,000 rows) sets one off; the first one of a process
walks the whole startup heap. Measured with ``gc.callbacks`` on the incremental snapshot of
``manage.py benchmark incremental``: one such collection, 70 ms of a 1-second snapshot. Frozen
objects are left out of every collection.

Before the prefork pool forks, freezing also keeps the children from writing the collector's
bookkeeping into the memory pages they share with the parent (the ``gc`` module's
documentation recommends it for that). config/celery.py calls ``settle`` when a worker starts
and in each pool process; the benchmark's measuring processes call it as a worker would.
"""

import gc


def settle() -> None:
    """Collect what startup left unreachable, then freeze every object alive now."""
    gc.collect()
    gc.freeze()
