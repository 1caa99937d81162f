"""A Celery worker whose next analysis pauses mid-task, so a test can kill it there (test only).

`python -m tests.fault.paused_worker -A config worker ...` takes the same arguments as
`celery`. While the file named by ABACUS_TEST_PAUSE_FILE exists, the next analysis task removes
it, logs "test pause: analysis holding", and sleeps ABACUS_TEST_PAUSE_SECONDS inside the task
(the message is received and unacknowledged, the experiment lock is held) before computing.
"""

import logging
import os
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

import analysis.tasks as tasks  # noqa: E402
from config.celery import app  # noqa: E402

logger = logging.getLogger("abacus.test")
_analysis_run = tasks.analysis_run


def _paused_analysis_run(**kwargs):  # noqa: ANN003, ANN202
    marker = os.environ.get("ABACUS_TEST_PAUSE_FILE", "")
    if marker and os.path.exists(marker):
        os.remove(marker)
        seconds = float(os.environ.get("ABACUS_TEST_PAUSE_SECONDS", "60"))
        logger.warning("test pause: analysis holding for %.0f s", seconds)
        time.sleep(seconds)
    return _analysis_run(**kwargs)


tasks.analysis_run = _paused_analysis_run

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:2] == ["-A", "config"]:
        args = args[2:]
    app.worker_main(args)
