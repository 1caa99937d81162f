"""A worker's startup objects are left out of garbage collection (core/heap.py)."""

import gc
import weakref

from celery.signals import worker_init, worker_process_init

from config import celery
from core import heap


def test_settle_collects_then_freezes_every_live_object():
    class Cycle:
        pass

    garbage = Cycle()
    garbage.me = garbage  # unreachable once deleted: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage
    try:
        heap.settle()
        assert gone() is None  # collected first, not frozen for the process's life
        assert gc.get_freeze_count() > 1000  # Django, the apps, numpy...
    finally:
        gc.unfreeze()


def test_a_worker_and_each_of_its_pool_processes_settle_when_they_start():
    for signal in (worker_init, worker_process_init):
        receivers = [ref() for _, ref in signal.receivers]
        assert celery.settle_heap in receivers, signal
