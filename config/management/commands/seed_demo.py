"""Create the demo login, project, metrics, the running `checkout-redesign` experiment and
two feature flags.

Only on a demo install: the embedded default (no DATABASE_URL) or ABACUS_DEMO=1. The `demo`
login's password is published in the README, so it is an admin of the demo project only, never
a superuser or staff.
"""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from experiments.models import Environment, Experiment, Metric, Project, Role, Segment
from experiments.services import (
    audit_log_record,
    experiment_create,
    experiment_start,
    membership_set,
    metric_create,
    project_create,
)
from flags.models import Flag
from flags.services import flag_create, flag_environment_update, segment_create

DEMO_USER = "demo"
DEMO_PASSWORD = "abacus-demo"


def demo_user_ensure(project: Project) -> Any:
    """The `demo` login: an admin of the demo project, never a superuser or staff (an older
    seed made it a superuser: it is demoted)."""
    User = get_user_model()  # noqa: N806
    user = User.objects.filter(username=DEMO_USER).first()
    if user is None:
        user = User(username=DEMO_USER, email="demo@example.com")
        validate_password(DEMO_PASSWORD, user)
        user.set_password(DEMO_PASSWORD)
        user.save()
    elif user.is_superuser or user.is_staff:
        user.is_superuser = user.is_staff = False
        user.save(update_fields=["is_superuser", "is_staff"])
    membership_set(project=project, user=user, role=Role.ADMIN)
    return user


DEMO_METRICS = [
    dict(
        key="purchase",
        name="Purchase conversion",
        kind="binomial",
        event_name="purchase",
        direction="increase",
    ),
    dict(
        key="revenue",
        name="Revenue per user",
        kind="mean",
        event_name="purchase",
        direction="increase",
        winsorize_quantile=0.99,
    ),
    dict(
        key="checkout-errors",
        name="Checkout errors per user",
        kind="count",
        event_name="checkout_error",
        direction="decrease",
    ),
]


def demo_metrics_ensure(project: Project, user: Any) -> None:
    """The demo's metric catalog; metrics already there are left as they are."""
    for m in DEMO_METRICS:
        if not Metric.objects.filter(project=project, key=m["key"]).exists():
            metric_create(project=project, actor=user, **m)


def demo_experiment_start(project: Project, user: Any, days: int) -> Experiment:
    """Create and start `checkout-redesign`, backdated `days` days (audited)."""
    experiment = experiment_create(
        project=project,
        key="checkout-redesign",
        name="Checkout redesign",
        hypothesis="A one-page checkout raises purchase conversion without more errors.",
        variants=[
            {
                "key": "control",
                "name": "Current checkout",
                "weight": 0.5,
                "is_control": True,
                "value": {"layout": "classic"},
            },
            {
                "key": "treatment",
                "name": "One-page checkout",
                "weight": 0.5,
                "value": {"layout": "one-page"},
            },
        ],
        metrics=[
            {"metric": "purchase", "role": "primary"},
            {"metric": "revenue", "role": "secondary"},
            {
                "metric": "checkout-errors",
                "role": "guardrail",
                "non_inferiority_margin": 0.10,
            },
        ],
        planned_sample_size=10000,
        mde=0.15,
        actor=user,
    )
    experiment = experiment_start(experiment=experiment, actor=user)
    # Demo only: pretend it started days ago so the simulated traffic spans real time.
    started = timezone.now() - timedelta(days=days)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=started, phase_started_at=started)
    audit_log_record(
        project=project,
        experiment=experiment,
        action="demo.backdate",
        target=experiment.key,
        after={"started_at": started.isoformat()},
    )
    return experiment


def demo_flags_ensure(project: Project, user: Any) -> None:
    """Two demo flags (skipped when there): `new-search`, on in production for the
    `beta-testers` segment and a 10% rollout, on for everyone in staging; and `checkout-layout`,
    whose production rule is the `checkout-redesign` experiment (an A/B test as a flag rule)."""
    if Flag.objects.filter(project=project, key="new-search").exists():
        return
    if not Segment.objects.filter(project=project, key="beta-testers").exists():
        segment_create(
            project=project,
            actor=user,
            key="beta-testers",
            name="Beta testers",
            description="Staff in the Benelux, plus two named testers.",
            condition={"country": {"$in": ["NL", "BE", "LU"]}, "staff": True},
            include=["user-1", "user-2"],
        )
    envs = {e.key: e for e in Environment.objects.filter(project=project)}
    search = flag_create(
        project=project,
        actor=user,
        key="new-search",
        name="New search",
        description="The rewritten search page.",
        tags=["search", "web"],
    )
    flag_environment_update(
        flag=search,
        environment=envs["production"],
        actor=user,
        enabled=True,
        default_variation="off",
        rules=[
            {"type": "force", "segment": "beta-testers", "variation": "on"},
            {"type": "rollout", "hash_attribute": "id", "weights": {"on": 0.1, "off": 0.9}},
        ],
    )
    flag_environment_update(
        flag=search, environment=envs["staging"], actor=user, enabled=True, default_variation="on"
    )
    layout = flag_create(
        project=project,
        actor=user,
        key="checkout-layout",
        name="Checkout layout",
        type="json",
        variations=[
            {"key": "control", "value": {"layout": "classic"}},
            {"key": "treatment", "value": {"layout": "one-page"}},
        ],
        off_variation="control",
        tags=["checkout"],
    )
    flag_environment_update(
        flag=layout,
        environment=envs["production"],
        actor=user,
        enabled=True,
        default_variation="control",
        rules=[{"type": "experiment", "experiment": "checkout-redesign"}],
    )


def demo_release_ensure(project: Project, user: Any) -> None:
    """The health metrics (error rate: `errors` / `requests`; latency p95 and p99 of
    `latency_ms`) and a guarded release of the `fast-checkout-api` flag in production, running
    at its second step with a history of checks: 30 minutes of simulated traffic analysed every
    3 minutes by the real monitor (releases.monitor), a pause and a resume by the demo user,
    each move dated when it happened. Skipped when the flag already has a release; about
    three seconds."""
    import uuid
    from functools import partial

    import numpy as np

    from assignments.models import FlagExposure, MetricEvent
    from releases.models import Release, ReleaseTransition
    from releases.monitor import release_analyze
    from releases.services import release_create, release_pause, release_resume

    health = [
        dict(key="error-rate", name="Error rate", kind="ratio", event_name="errors",
             denominator_event="requests", direction="decrease"),
        dict(key="latency-p95", name="Latency p95", kind="quantile", event_name="latency_ms",
             direction="decrease", quantile=0.95),
        dict(key="latency-p99", name="Latency p99", kind="quantile", event_name="latency_ms",
             direction="decrease", quantile=0.99),
    ]  # fmt: skip
    for m in health:
        if not Metric.objects.filter(project=project, key=m["key"]).exists():
            metric_create(project=project, actor=user, **m)
    flag = Flag.objects.filter(project=project, key="fast-checkout-api").first()
    if flag is not None and Release.objects.filter(flag=flag).exists():
        return
    production = Environment.objects.get(project=project, key="production")
    with transaction.atomic():
        if flag is None:
            flag = flag_create(
                project=project, actor=user, key="fast-checkout-api", name="Fast checkout API",
                description="The checkout page calls the new, cached pricing service.",
                tags=["checkout", "backend"],
            )  # fmt: skip
        flag_environment_update(
            flag=flag, environment=production, actor=user, enabled=True, default_variation="off"
        )
        # p99 needs 1,000 values a side before it can decide: the catalog has it, this small
        # demo release watches the error rate and p95.
        release = release_create(
            project=project, flag=flag, environment=production, variation="on", actor=user,
            steps=[{"percent": 20, "min_minutes": 6, "min_units": 100},
                   {"percent": 50, "min_minutes": 25, "min_units": 200},
                   {"percent": 100, "min_minutes": 10, "min_units": 200}],
            metrics=[{"metric": "error-rate", "non_inferiority_margin": 0.10},
                     {"metric": "latency-p95", "non_inferiority_margin": 0.05}],
            analysis_interval_seconds=120,
            description="Demo: the new pricing service behind a guarded canary.",
        )  # fmt: skip
        # Demo only: the release started 30 minutes ago; its moves are dated when they happened.
        start = timezone.now() - timedelta(minutes=30, seconds=10)
        Release.objects.filter(pk=release.pk).update(started_at=start, step_started_at=start)
        ReleaseTransition.objects.filter(release=release).update(at=start)

        def dated(at: Any, move: Any) -> None:
            seen = list(
                ReleaseTransition.objects.filter(release=release).values_list("pk", flat=True)
            )
            move()
            ReleaseTransition.objects.filter(release=release).exclude(pk__in=seen).update(at=at)

        by_hand = {
            12: (release_pause, "Checking the pricing service's dashboards before going on."),
            15: (release_resume, "Dashboards look fine."),
        }
        rng, unit, per_minute = np.random.default_rng(20), 0, 80
        for minute in range(3, 31, 3):
            release.refresh_from_db()
            share = release.steps[release.step]["percent"] / 100.0
            exposures, events = [], []
            for offset in rng.uniform(0, 179, size=3 * per_minute):
                unit += 1
                uid, new = f"shopper-{unit}", bool(rng.random() < share)
                ts = start + timedelta(minutes=minute - 3, seconds=float(offset))
                exposures.append(FlagExposure(
                    project=project, event_id=uuid.uuid4().hex, environment=production,
                    flag=flag, variation="on" if new else "off", unit_id=uid, ts=ts,
                ))  # fmt: skip
                latencies = rng.lognormal(np.log(95 if new else 105), 0.5, size=2)
                errors = int(rng.binomial(2, 0.02))
                values = [("requests", 2.0)] + [
                    ("latency_ms", round(float(v), 1)) for v in latencies
                ]
                values += [("errors", float(errors))] if errors else []
                events.extend(
                    MetricEvent(project=project, event_id=uuid.uuid4().hex, name=name,
                                unit_id=uid, value=value, ts=ts + timedelta(seconds=1))
                    for name, value in values
                )  # fmt: skip
            FlagExposure.objects.bulk_create(exposures, batch_size=2000)
            MetricEvent.objects.bulk_create(events, batch_size=2000)
            at = start + timedelta(minutes=minute)
            dated(at, partial(release_analyze, release.pk, through=at, now=at))
            if minute in by_hand:
                act, reason = by_hand[minute]
                dated(at + timedelta(minutes=1),
                      partial(act, release=release, actor=user, reason=reason))  # fmt: skip


class Command(BaseCommand):
    help = "Seed a demo project with a running experiment and simulated traffic (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=8000)
        parser.add_argument("--days", type=int, default=14, help="how long it has been running")

    def handle(self, *args: Any, **o: Any) -> None:
        if not settings.ABACUS_DEMO:
            raise CommandError(
                "The demo (a login whose password is published) is seeded only on the embedded "
                "default (no DATABASE_URL) or with ABACUS_DEMO=1."
            )
        if Experiment.objects.filter(project__slug="demo", key="checkout-redesign").exists():
            project = Project.objects.get(slug="demo")
            demo_flags_ensure(project, demo_user_ensure(project))
            demo_release_ensure(project, demo_user_ensure(project))
            self.stdout.write("Demo experiment already seeded.")
            return
        experiment = self.seed_definitions(days=o["days"])
        call_command(
            "simulate_traffic",
            project="demo",
            experiment="checkout-redesign",
            users=o["users"],
            stdout=self.stdout,
        )
        self.backfill(experiment)
        demo_release_ensure(experiment.project, demo_user_ensure(experiment.project))
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo seeded. Log in as '{DEMO_USER}' with password '{DEMO_PASSWORD}'."
            )
        )

    @transaction.atomic
    def seed_definitions(self, *, days: int) -> Experiment:
        """The demo project, its `demo` login, metrics and the started experiment, at once."""
        project = Project.objects.filter(slug="demo").first() or project_create(
            slug="demo", name="Demo shop"
        )
        user = demo_user_ensure(project)
        demo_metrics_ensure(project, user)
        experiment = demo_experiment_start(project, user, days)
        demo_flags_ensure(project, user)
        return experiment

    def backfill(self, experiment: Experiment) -> None:
        """A daily history of snapshots, as if the worker had analysed it every day, so the
        dashboard's over-time charts have a story to tell; the worker adds the latest one."""
        from analysis.services import analysis_backfill

        try:
            snapshots = analysis_backfill(experiment_id=experiment.pk, every=timedelta(days=1))
        except Exception as exc:  # noqa: BLE001 - make run never fails because an analysis did
            # The failed run is recorded with its error (analysis history and health panel);
            # the worker analyses the experiment again on its schedule.
            self.stderr.write(f"The demo's daily history could not be computed: {exc}")
        else:
            self.stdout.write(f"Backfilled {len(snapshots)} daily snapshots.")
