"""Create the demo login, project, metrics and the running `checkout-redesign` experiment.

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

from experiments.models import Experiment, Metric, Project, Role
from experiments.services import (
    audit_log_record,
    experiment_create,
    experiment_start,
    membership_set,
    metric_create,
    project_create,
)

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
            demo_user_ensure(Project.objects.get(slug="demo"))
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
        return demo_experiment_start(project, user, days)

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
