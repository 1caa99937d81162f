"""notify: one delivery per matching channel and per member who asked for the event by email,
queued after the caller's transaction commits, never raising into the caller."""

import pytest
from django.core import mail
from django.db import transaction

from experiments.models import Role
from experiments.services import membership_remove
from notifications.models import EVENTS, DeliveryStatus, Event, NotificationDelivery
from notifications.services import (
    notification_channel_create,
    notification_preference_set,
    notify,
)

pytestmark = pytest.mark.django_db


def send(project, event=Event.RELEASE_STARTED, **extra):
    return notify(
        project=project,
        event=event,
        title=extra.pop("title", "Release checkout-v2 started"),
        text=extra.pop("text", "Step 1 of 4: 5% of production."),
        link=extra.pop("link", "/p/shop/releases/3/"),
        **extra,
    )


def test_events_catalogue_is_the_documented_one():
    assert EVENTS == (
        "release.started",
        "release.step_advanced",
        "release.held",
        "release.paused",
        "release.resumed",
        "release.rolled_back",
        "release.completed",
        "release.failed",
        "experiment.recommendation_changed",
        "experiment.srm_detected",
        "experiment.rolled_back",
        "experiment.ramped",
    )


def test_channels_receive_the_events_they_chose_and_empty_means_all(project):
    every = notification_channel_create(
        project=project, kind="email", name="all", target="team@example.com"
    )
    releases = notification_channel_create(
        project=project,
        kind="email",
        name="releases",
        target="rel@example.com",
        events=["release.started", "release.completed"],
    )
    notification_channel_create(
        project=project,
        kind="email",
        name="off",
        target="off@example.com",
        enabled=False,
    )
    started = send(project, Event.RELEASE_STARTED)
    srm = send(project, Event.EXPERIMENT_SRM_DETECTED)
    assert len(started) == 2 and len(srm) == 1
    by_id = NotificationDelivery.objects.in_bulk(started + srm)
    assert {by_id[i].channel for i in started} == {every, releases}
    assert by_id[srm[0]].channel == every
    delivery = by_id[started[0]]
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 0
    assert delivery.payload["link"] == "http://localhost:8000/p/shop/releases/3/"


def test_people_get_mail_only_for_their_events_and_only_while_members(project, make_member):
    pm = make_member("pam", Role.EDITOR)
    viewer = make_member("vic", Role.VIEWER)
    notification_preference_set(user=pm, project=project, events=["release.rolled_back"])
    notification_preference_set(user=viewer, project=project)  # every event
    rolled_back = NotificationDelivery.objects.filter(pk__in=send(project, "release.rolled_back"))
    assert sorted(d.target for d in rolled_back) == ["pam@example.com", "vic@example.com"]
    assert {d.user for d in rolled_back} == {pm, viewer}
    started = NotificationDelivery.objects.filter(pk__in=send(project, "release.started"))
    assert [d.target for d in started] == ["vic@example.com"]
    # Email off: nothing; removed from the project: nothing, though the preference row stays.
    notification_preference_set(user=viewer, project=project, email=False)
    membership_remove(project=project, user=pm)
    assert send(project, "release.rolled_back") == []


def test_a_non_member_cannot_have_preferences(project, django_user_model):
    from core.errors import DomainError

    outsider = django_user_model.objects.create_user("otto", "otto@example.com", "pw-12345")
    with pytest.raises(DomainError) as refused:
        notification_preference_set(user=outsider, project=project, events=["release.held"])
    assert refused.value.field == "project"


def test_a_person_on_an_email_channel_is_not_mailed_twice(project, make_member):
    pm = make_member("pam")
    notification_preference_set(user=pm, project=project)
    notification_channel_create(
        project=project, kind="email", name="team", target="lead@example.com, PAM@example.com"
    )
    [only] = NotificationDelivery.objects.filter(pk__in=send(project))
    assert only.channel is not None and only.user is None


def test_deliveries_are_queued_only_after_the_transaction_commits(
    project, django_capture_on_commit_callbacks
):
    notification_channel_create(project=project, kind="email", name="t", target="t@example.com")
    with django_capture_on_commit_callbacks() as callbacks:
        ids = send(project)
    assert len(ids) == 1 and len(callbacks) == 1


def test_a_rolled_back_caller_sends_nothing(project, django_capture_on_commit_callbacks):
    notification_channel_create(project=project, kind="email", name="t", target="t@example.com")
    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        send(project)
        raise RuntimeError("the release step failed")
    assert callbacks == [] and not NotificationDelivery.objects.exists()


def test_notify_never_raises_into_the_caller(project, monkeypatch, caplog):
    notification_channel_create(project=project, kind="email", name="t", target="t@example.com")
    assert send(project, "release.exploded") == []  # unknown event: logged, nothing recorded

    def broken(**kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr("notifications.services._record", broken)
    with transaction.atomic():
        assert send(project) == []
        # The caller's transaction is still usable after the failed savepoint.
        assert NotificationDelivery.objects.count() == 0
    assert "not recorded" in caplog.text


def test_a_broker_outage_leaves_the_delivery_pending(
    project, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    from notifications.tasks import deliver

    def down(*args):
        raise ConnectionError("broker down")

    monkeypatch.setattr(deliver, "delay", down)
    notification_channel_create(project=project, kind="email", name="t", target="t@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        [delivery_id] = send(project)
    assert NotificationDelivery.objects.get(pk=delivery_id).status == DeliveryStatus.PENDING
    assert "stays pending" in caplog.text


def test_links_are_made_absolute_with_the_public_url(
    project, settings, eager, django_capture_on_commit_callbacks
):
    settings.ABACUS_PUBLIC_URL = "https://abacus.example.com/"
    notification_channel_create(project=project, kind="email", name="t", target="t@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        send(project, link="/p/shop/releases/3/")
    [message] = mail.outbox
    assert "https://abacus.example.com/p/shop/releases/3/" in message.body
    assert send(project, link="https://elsewhere.example.com/x") != []
    [_, second] = NotificationDelivery.objects.order_by("id")
    assert second.payload["link"] == "https://elsewhere.example.com/x"


def test_data_is_kept_with_the_delivery(project):
    notification_channel_create(project=project, kind="email", name="t", target="t@example.com")
    [delivery_id] = send(project, data={"release": 3, "step": 1})
    delivery = NotificationDelivery.objects.get(pk=delivery_id)
    assert delivery.payload["data"] == {"release": 3, "step": 1}
    assert delivery.payload["project"] == "shop"


def test_deliveries_never_queued_are_queued_again_after_ten_minutes_and_given_up_after_a_day(
    project, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from core.deliveries import NEVER_QUEUED
    from notifications.services import notification_deliveries_resend
    from notifications.tasks import deliver

    queued = []
    monkeypatch.setattr(deliver, "delay", lambda delivery_id: queued.append(delivery_id))
    notification_channel_create(project=project, kind="email", name="t", target="t@example.com")
    lost, stale, retried, sent = (send(project)[0] for _ in range(4))
    queued.clear()  # the tests' transaction never commits: nothing was queued by send
    old = NotificationDelivery.objects.filter
    old(pk=stale).update(created_at=timezone.now() - timedelta(days=2))
    old(pk=retried).update(attempts=2, created_at=timezone.now() - timedelta(hours=1))
    old(pk=sent).update(status=DeliveryStatus.SENT, created_at=timezone.now() - timedelta(hours=1))

    assert notification_deliveries_resend() == (0, 1)
    assert notification_deliveries_resend(now=timezone.now() + timedelta(minutes=11)) == (1, 0)
    assert queued == [lost]
    given_up = NotificationDelivery.objects.get(pk=stale)
    assert (given_up.status, given_up.last_error) == (DeliveryStatus.FAILED, NEVER_QUEUED)


def test_of_two_tasks_for_one_notification_one_sends(project, read_before):
    """A task that read the delivery before another claimed its attempt sends nothing."""
    from notifications.tasks import deliver

    notification_channel_create(project=project, kind="email", name="t", target="t@example.com")
    [delivery_id] = send(project)
    NotificationDelivery.objects.filter(pk=delivery_id).update(attempts=1)
    read_before(NotificationDelivery, attempts=0)
    deliver.apply(args=[delivery_id])
    assert mail.outbox == []
    assert list(NotificationDelivery.objects.values_list("attempts", flat=True)) == [1]
