"""The monitor keeps each release's cadence: the tick schedules the next analysis one cadence
after the last was due (not after the tick, which lands late by a varying amount), and the
analysis it queued does not push that later."""

from __future__ import annotations

from datetime import timedelta

import pytest

from releases.monitor import release_analyze, releases_tick
from releases.services import release_create

pytestmark = pytest.mark.django_db


def test_an_analysis_keeps_the_cadence_the_tick_set(project, flag, production, admin_user,
                                                    health_metrics):  # fmt: skip
    """The tick queues an analysis and sets the next one a cadence after it was due; the
    analysis, run a little later by the worker, does not push it further (else each tick misses
    it by the queueing delay and the cadence becomes interval + one tick)."""
    release = release_create(
        project=project, flag=flag, environment=production, variation="on",
        steps=[{"percent": 50, "min_minutes": 10, "min_units": 100}],
        metrics=[{"metric": "error-rate"}], actor=admin_user,
    )  # fmt: skip
    due = release.next_analysis_at
    assert releases_tick(due) == [release.pk]
    release.refresh_from_db()
    scheduled = release.next_analysis_at
    assert scheduled == due + timedelta(seconds=release.analysis_interval_seconds)
    release_analyze(release.pk, now=due + timedelta(seconds=0.5))  # the worker's delay
    release.refresh_from_db()
    assert release.next_analysis_at == scheduled
    assert releases_tick(scheduled) == [release.pk]


def test_an_unscheduled_analysis_sets_the_next_one(project, flag, production, admin_user,
                                                   health_metrics):  # fmt: skip
    """Resumed (next analysis now) or long overdue: the next one is a cadence from this one."""
    release = release_create(
        project=project, flag=flag, environment=production, variation="on",
        steps=[{"percent": 50, "min_minutes": 10, "min_units": 100}],
        metrics=[{"metric": "error-rate"}], actor=admin_user,
    )  # fmt: skip
    late = release.next_analysis_at + timedelta(minutes=5)
    release_analyze(release.pk, now=late)
    release.refresh_from_db()
    assert release.next_analysis_at == late + timedelta(seconds=release.analysis_interval_seconds)


def test_a_late_tick_keeps_the_schedule(project, flag, production, admin_user, health_metrics):
    """A tick landing 0.3 s after the analysis was due schedules the next one a cadence after
    the due time; a tick long after (a worker down) schedules it a cadence from now."""
    release = release_create(
        project=project, flag=flag, environment=production, variation="on",
        steps=[{"percent": 50, "min_minutes": 10, "min_units": 100}],
        metrics=[{"metric": "error-rate"}], actor=admin_user,
    )  # fmt: skip
    interval = timedelta(seconds=release.analysis_interval_seconds)
    due = release.next_analysis_at
    assert releases_tick(due + timedelta(seconds=0.3)) == [release.pk]
    release.refresh_from_db()
    assert release.next_analysis_at == due + interval
    much_later = due + 10 * interval
    assert releases_tick(much_later) == [release.pk]
    release.refresh_from_db()
    assert release.next_analysis_at == much_later + interval
