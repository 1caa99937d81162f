"""The release pages' reads: each transition in words, the steps on a timeline (states, starts,
ends, what happened during each), the decision in plain words, and the checks thinned for the
charts keeping every step's ends and every check that did not hold."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.utils import timezone

from releases.models import ReleaseCheck, ReleaseStatus
from releases.page import (
    _thin,
    check_words,
    checks_for_chart,
    decision_of,
    quantile_label,
    release_page,
    release_page_data,
)
from releases.services import release_advance, release_create, release_pause, release_rollback

pytestmark = pytest.mark.django_db

STEPS = [
    {"percent": 10, "min_minutes": 0, "min_units": 0},
    {"percent": 50, "min_minutes": 0, "min_units": 0},
    {"percent": 100, "min_minutes": 0, "min_units": 0},
]


@pytest.fixture
def release(project, flag, production, admin_user):
    return release_create(
        project=project, flag=flag, environment=production, variation="on", steps=STEPS,
        actor=admin_user,
    )  # fmt: skip


def test_quantile_labels():
    assert [quantile_label(q) for q in (0.5, 0.95, 0.99, 0.999, None)] == [
        "p50", "p95", "p99", "p99.9", "",
    ]  # fmt: skip


def test_the_timeline_places_each_move_on_its_step(release, admin_user):
    release_pause(release=release, actor=admin_user, reason="look")
    release_advance(release=release, actor=admin_user, reason="fine")
    release_rollback(release=release, actor=admin_user, reason="errors")
    release.refresh_from_db()
    page = release_page(release)
    assert [s.state for s in page.steps] == ["done", "stopped", "pending"]
    first, second, third = page.steps
    assert [(r.words, r.who, r.transition.reason) for r in first.events] == [
        ("paused", "alice", "look"),
        ("advanced from 10% to 50% (still paused)", "alice", "fine"),
    ]
    assert first.start.words == "started at 10%" and first.ended_at == first.events[-1].at
    assert second.start is first.events[-1]
    assert [r.words for r in second.events] == ["rolled back: the baseline is served to everyone"]
    assert second.ended_at == second.events[0].at
    assert third.started_at is None and third.events == []
    assert [r.words for r in page.outside_steps] == ["created"]
    assert decision_of(release).headline.startswith("Rolled back")


def test_a_scheduled_release_cancelled_shows_outside_the_steps(release, project, flag, admin_user):
    release_rollback(release=release, actor=admin_user)
    later = release_create(
        project=project, flag=flag, environment=release.environment, variation="on",
        steps=STEPS, actor=admin_user, start_at=timezone.now() + timedelta(days=1),
    )  # fmt: skip
    assert decision_of(later).headline.startswith("Scheduled: starts at")
    release_rollback(release=later, actor=admin_user, reason="not now")
    later.refresh_from_db()
    page = release_page(later)
    assert later.status == ReleaseStatus.ROLLED_BACK
    assert [s.state for s in page.steps] == ["pending", "pending", "pending"]
    assert [r.words for r in page.outside_steps] == ["created", "cancelled before it started"]


def test_thinning_keeps_step_ends_and_every_move():
    rows = [(i, 0 if i < 500 else 1, "hold") for i in range(1000)]
    rows[499] = (499, 0, "advance")
    rows[700] = (700, 1, "rollback")
    kept = _thin(rows, 100)
    assert {0, 499, 500, 999, 700} <= set(kept)
    assert 90 <= len(kept) <= 110 and kept == sorted(kept)
    assert _thin(rows[:50], 100) == list(range(50))


def test_the_charts_read_a_thinned_history_in_time_order(release):
    start = timezone.now()
    ReleaseCheck.objects.bulk_create(
        ReleaseCheck(release=release, step=i // 40, percent=10, at=start + timedelta(minutes=i),
                     action="hold", units={}, metrics=[])
        for i in range(120)
    )  # fmt: skip
    checks = checks_for_chart(release, limit=30)
    assert 25 <= len(checks) <= 40
    assert [c.at for c in checks] == sorted(c.at for c in checks)
    data = release_page_data(release)
    assert len(data["checks"]) == 120 and data["release"]["live"] is True


def test_the_page_reads_its_chart_data_with_the_rest(release, django_assert_num_queries):
    """The page's chart data is the refresh's JSON, read once with the page (not twice)."""
    release_pause(release=release, actor=release.created_by, reason="look")
    with django_assert_num_queries(5):
        page = release_page(release)
    assert page.chart_data == release_page_data(release)


def test_the_decision_and_the_latest_check_in_words(release):
    """A started release was decided at its start (no analysis yet); a check reads as a line."""
    started = release.step_started_at.astimezone(UTC)
    assert decision_of(release).when == (
        f"Decided at {started:%Y-%m-%d %H:%M:%S} UTC. "
        f"Next analysis about {release.next_analysis_at.astimezone(UTC):%H:%M:%S} UTC."
    )
    release_rollback(release=release, actor=release.created_by)
    release.refresh_from_db()
    assert decision_of(release).when.startswith("Decided at ")  # no next analysis once final
    assert "Next" not in decision_of(release).when
    check = ReleaseCheck(release=release, step=1, percent=2.5, at=started, action="hold",
                         units={"baseline": 300, "new": 8, "excluded": 2}, metrics=[])  # fmt: skip
    assert check_words(check) == (
        f"step 2 at 2.5%, data through {started:%H:%M:%S} UTC · 8 new vs 300 baseline units, "
        "2 excluded (served both)"
    )
