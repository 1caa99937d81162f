"""Simulate realistic traffic for an experiment through the real service API.

Each simulated user arrives at a random time since the experiment started, asks /assign for its
variant, is exposed, and then may purchase (conversion and revenue, with a true lift in the
treatment) and hit errors (a guardrail). Some users purchased before exposure too, which gives
CUPED a covariate. Events are posted in batches to /api/v1/events: in-process through Django's
full request stack by default, or over HTTP to a running server with --url.
"""

import json
import uuid
from datetime import timedelta
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test import Client
from django.utils import timezone

from experiments.models import Experiment, ExperimentStatus
from experiments.services import api_key_create


class ApiPoster:
    """POSTs JSON with a Bearer key, in-process or to a server URL."""

    def __init__(self, secret: str, url: str | None) -> None:
        self.secret = secret
        self.url = url.rstrip("/") if url else None
        self.client = Client() if url is None else None

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.secret}"}
        if self.client is not None:
            response = self.client.post(
                path, data=json.dumps(body), content_type="application/json", headers=headers
            )
            status, data = response.status_code, response.json()
        else:
            import requests

            response = requests.post(self.url + path, json=body, headers=headers, timeout=60)
            status, data = response.status_code, response.json()
        if status >= 300:
            raise CommandError(f"POST {path} answered {status}: {data}")
        return data


class Command(BaseCommand):
    help = "Post simulated assignments, exposures and events for an experiment (demo data)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", default="demo")
        parser.add_argument("--experiment", default="checkout-redesign")
        parser.add_argument("--users", type=int, default=5000)
        parser.add_argument("--conversion", type=float, default=0.12, help="control rate")
        parser.add_argument("--lift", type=float, default=0.30, help="true relative lift")
        parser.add_argument("--error-lift", type=float, default=0.0, help="lift in errors")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--batch", type=int, default=2000)
        parser.add_argument("--url", default=None, help="post over HTTP to this server")

    def handle(self, *args: Any, **o: Any) -> None:
        experiment = (
            Experiment.objects.select_related("project")
            .filter(project__slug=o["project"], key=o["experiment"])
            .first()
        )
        if experiment is None:
            raise CommandError(f"No experiment '{o['experiment']}' in project '{o['project']}'.")
        if experiment.status != ExperimentStatus.RUNNING:
            raise CommandError("The experiment must be running to receive traffic.")
        secret = api_key_create(
            project=experiment.project, name="simulate_traffic", scopes=["assign", "ingest"]
        ).secret
        poster = ApiPoster(secret, o["url"])
        rng = np.random.default_rng(o["seed"])
        now = timezone.now()
        start = experiment.phase_started_at or experiment.started_at or now - timedelta(days=1)
        span = max(60.0, (now - start).total_seconds() - 60)
        run_id = uuid.uuid4().hex[:8]
        users = [f"user-{run_id}-{i}" for i in range(o["users"])]
        control = experiment.variants.get(is_control=True).key

        events: list[dict[str, Any]] = []
        assigned = 0
        for chunk_start in range(0, len(users), 1000):
            chunk = users[chunk_start : chunk_start + 1000]
            answer = poster.post(
                "/api/v1/assign/bulk",
                {
                    "units": [{"unit_id": u, "attributes": {"country": "US"}} for u in chunk],
                    "experiments": [experiment.key],
                },
            )
            for result in answer["results"]:
                got = result["assignments"].get(experiment.key)
                if got is None or got.get("in_experiment") is False:
                    continue
                assigned += 1
                events.extend(
                    self._user_events(
                        rng,
                        result["unit_id"],
                        got["variant"],
                        control,
                        experiment.key,
                        start,
                        span,
                        now,
                        o,
                    )
                )
            self.stdout.write(f"assigned {min(chunk_start + 1000, len(users))}/{len(users)} users")
        rng.shuffle(events)  # arrive out of order, like real traffic
        totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
        for i in range(0, len(events), o["batch"]):
            answer = poster.post("/api/v1/events", {"events": events[i : i + o["batch"]]})
            totals["accepted"] += answer["accepted"]
            totals["duplicates"] += answer["duplicates"]
            totals["rejected"] += len(answer["rejected"])
            self.stdout.write(f"posted {min(i + o['batch'], len(events))}/{len(events)} events")
        self.stdout.write(
            self.style.SUCCESS(
                f"{assigned} users in the experiment; events accepted {totals['accepted']}, "
                f"duplicates {totals['duplicates']}, rejected {totals['rejected']}"
            )
        )

    def _user_events(
        self,
        rng: np.random.Generator,
        unit: str,
        variant: str,
        control: str,
        key: str,
        start: Any,
        span: float,
        now: Any,
        o: dict[str, Any],
    ) -> list[dict[str, Any]]:
        def ev(kind: str, ts: Any, **fields: Any) -> dict[str, Any]:
            return {
                "event_id": uuid.uuid4().hex,
                "type": kind,
                "unit_id": unit,
                "timestamp": ts.isoformat(),
                **fields,
            }

        arrive = start + timedelta(seconds=float(rng.uniform(0, span)))
        out = [ev("exposure", arrive, experiment=key, variant=variant)]
        loyal = rng.random() < 0.2  # loyal users buy before and after: CUPED's signal
        if loyal or rng.random() < 0.05:
            before = arrive - timedelta(hours=float(rng.uniform(1, 60)))
            out.append(
                ev(
                    "metric",
                    before,
                    name="purchase",
                    value=round(float(rng.lognormal(3.6, 0.5)), 2),
                )
            )
        rate = o["conversion"] * (1.8 if loyal else 0.8)
        treated = variant != control
        if treated:
            rate *= 1 + o["lift"]
        if rng.random() < min(rate, 0.95):
            at = arrive + timedelta(hours=float(rng.exponential(8)))
            if at < now:
                out.append(
                    ev(
                        "metric",
                        at,
                        name="purchase",
                        value=round(float(rng.lognormal(3.6, 0.5)), 2),
                    )
                )
        errors = rng.poisson(0.3 * (1 + (o["error_lift"] if treated else 0)))
        for _ in range(int(errors)):
            at = arrive + timedelta(minutes=float(rng.uniform(0, 30)))
            if at < now:
                out.append(ev("metric", at, name="checkout_error", value=1))
        return out
