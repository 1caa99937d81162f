"""The demo's guarded release (seed_demo's demo_release_ensure): the health metrics, one running
release with checks made by the real monitor and moves dated in order, a page that shows them,
and a second run that adds nothing."""

import pytest
from django.test import Client

from config.management.commands.seed_demo import demo_release_ensure, demo_user_ensure
from experiments.models import Metric
from experiments.services import project_create
from releases.models import Release, ReleaseCheck, ReleaseStatus

pytestmark = pytest.mark.django_db


def test_the_demo_has_health_metrics_and_a_running_release_with_checks():
    project = project_create(slug="demo", name="Demo shop")
    user = demo_user_ensure(project)
    demo_release_ensure(project, user)

    metrics = {m.key: m for m in Metric.objects.filter(project=project)}
    errors = metrics["error-rate"]
    assert (errors.kind, errors.event_name, errors.denominator_event) == (
        "ratio",
        "errors",
        "requests",
    )
    assert errors.direction == "decrease"
    for key, q in (("latency-p95", 0.95), ("latency-p99", 0.99)):
        m = metrics[key]
        assert (m.kind, m.event_name, m.quantile) == ("quantile", "latency_ms", q)

    release = Release.objects.get(project=project)
    assert release.status == ReleaseStatus.RUNNING and release.step >= 1
    checks = list(ReleaseCheck.objects.filter(release=release))
    assert len(checks) >= 5 and {c.step for c in checks} >= {0, 1}
    assert all(row["status"] == "ok" for c in checks[-2:] for row in c.metrics)
    transitions = list(release.transitions.all())
    assert [t.at for t in transitions] == sorted(t.at for t in transitions)
    assert {"paused", "running"} <= {t.to_status for t in transitions}
    assert transitions[-1].at <= checks[-1].at  # dated when they happened, not when seeded

    client = Client()
    client.force_login(user)
    html = client.get(f"/p/demo/releases/{release.pk}/").content.decode()
    assert "Fast checkout API" in html and 'data-chart="metric" data-metric="latency-p95"' in html

    demo_release_ensure(project, user)  # idempotent
    assert Release.objects.count() == 1
    assert ReleaseCheck.objects.count() == len(checks)
    assert Metric.objects.filter(project=project).count() == len(metrics)
