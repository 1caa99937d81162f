"""`make run`: seed the demo if needed, then run web, Celery worker and beat until Ctrl-C."""

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from config import processes
from config.management.commands.seed_demo import DEMO_PASSWORD, DEMO_USER


class Command(BaseCommand):
    help = "Run the web app (gunicorn), a Celery worker and beat; stop all on Ctrl-C/SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--no-seed", action="store_true")

    def handle(self, *args: Any, **o: Any) -> None:
        if not o["no_seed"] and settings.ABACUS_DEMO:
            call_command("seed_demo", stdout=self.stdout)
        elif not o["no_seed"]:
            self.stdout.write(
                "No demo seeded: DATABASE_URL is set (ABACUS_DEMO=1 seeds one). Create people "
                "with `manage.py createsuperuser`."
            )
        call_command("collectstatic", interactive=False, verbosity=0)
        var = settings.VAR_DIR
        commands = {
            "web": processes.web(bind=f"{o['host']}:{o['port']}", workers=2),
            # One worker for every queue (releases, ingest, analysis, notify: config/queues.py);
            # production runs a pool per queue (docs/operations.md section 17).
            "worker": processes.worker(name=f"worker-{os.getpid()}@%h", concurrency=2),
            "beat": processes.beat(schedule=var / "celerybeat-schedule"),
        }
        procs = {
            name: subprocess.Popen(cmd, start_new_session=True) for name, cmd in commands.items()
        }
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            if stopping:
                return
            stopping = True
            self.stdout.write("\nStopping web, worker and beat...")
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()  # the leader shuts its own children down (warm shutdown)
            deadline = time.time() + 15
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            for proc in procs.values():
                with contextlib.suppress(ProcessLookupError):  # leftover pool children
                    os.killpg(proc.pid, signal.SIGKILL)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        url = f"http://{o['host']}:{o['port']}/"
        self._wait_healthy(url + "healthz")
        self._first_analysis()
        login = (
            f"Log in as '{DEMO_USER}' / '{DEMO_PASSWORD}' and open checkout-redesign.\n"
            if settings.ABACUS_DEMO and not o["no_seed"]
            else ""
        )
        self.stdout.write(
            self.style.SUCCESS(f"\nabacus is running at {url}\n{login}Press Ctrl-C to stop.")
        )
        try:
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None and not stopping:
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping.")
                        stop()
                time.sleep(0.5)
        finally:
            stop()

    def _wait_healthy(self, url: str) -> None:
        for _ in range(120):
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - localhost
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stderr.write(f"web did not answer at {url}")

    def _first_analysis(self) -> None:
        from django.db import transaction

        from analysis.services import analysis_enqueue
        from experiments.models import Experiment, ExperimentStatus

        # The worker computes a fresh snapshot of every running experiment at once, rather
        # than waiting for beat's first interval.
        for experiment in Experiment.objects.filter(status=ExperimentStatus.RUNNING):
            with transaction.atomic():
                analysis_enqueue(experiment, "startup")
