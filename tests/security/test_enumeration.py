"""Answers that must not reveal what exists: project slugs (to non-members) and usernames (to
project admins)."""

import pytest
from rest_framework.test import APIClient

from core.errors import DomainError
from experiments.models import Membership, Role
from experiments.services import membership_add, project_create

pytestmark = [pytest.mark.security, pytest.mark.django_db]


def _as(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_taken_slug_gets_one_answer_whether_or_not_the_project_is_visible(
    django_user_model, admin_user, project, settings
):
    """`shop` (alice's, invisible to mallory) and `mine` (mallory's own) answer alike."""
    settings.ABACUS_PROJECT_CREATION = "anyone"
    mallory = django_user_model.objects.create_user("mallory", "m@example.com", "pw-mallory-1")
    project_create(slug="mine", name="Mine", owner=mallory)
    client = _as(mallory)
    answers = {}
    for slug in ("shop", "mine"):
        r = client.post("/api/v1/projects/", {"slug": slug, "name": "X"}, format="json")
        assert r.status_code == 400
        answers[slug] = r.json()
    assert answers["shop"] == {
        "detail": "The slug 'shop' is not available; choose another.",
        "field": "slug",
    }
    assert answers["mine"]["detail"].replace("mine", "shop") == answers["shop"]["detail"]


def test_member_add_answers_alike_for_unknown_and_non_addable_users(
    django_user_model, admin_user, project
):
    """alice (admin of shop) cannot tell `ghost` (no such user) from `bob` (a user of another
    team's project) or `carl` (inactive)."""
    bob = django_user_model.objects.create_user("bob", "b@example.com", "pw-bob-12345")
    project_create(slug="other", name="Other", owner=bob)
    django_user_model.objects.create_user("carl", "c@example.com", "pw-carl-1234", is_active=False)
    client = _as(admin_user)
    answers = []
    for username in ("ghost", "bob", "carl"):
        r = client.post(
            "/api/v1/projects/shop/members/",
            {"username": username, "role": "viewer"},
            format="json",
        )
        assert r.status_code == 400
        answers.append((r.json()["field"], r.json()["detail"].replace(username, "X")))
    assert len(set(answers)) == 1 and answers[0][0] == "username"
    assert not Membership.objects.filter(project=project, user=bob).exists()


def test_a_co_member_can_be_added_by_username(django_user_model, admin_user, project):
    dora = django_user_model.objects.create_user("dora", "d@example.com", "pw-dora-12345")
    other = project_create(slug="other", name="Other", owner=admin_user)
    Membership.objects.create(project=other, user=dora, role=Role.VIEWER)
    membership = membership_add(
        project=project, username="dora", role=Role.ANALYST, actor=admin_user
    )
    assert membership.user == dora


def test_a_superuser_can_add_anyone(django_user_model, project):
    root = django_user_model.objects.create_superuser("root", "r@example.com", "root-pw-9876x")
    django_user_model.objects.create_user("bob", "b@example.com", "pw-bob-12345")
    assert membership_add(project=project, username="bob", role=Role.VIEWER, actor=root)


def test_creating_an_account_with_a_taken_name_does_not_add_its_owner(
    django_user_model, admin_user, project
):
    bob = django_user_model.objects.create_user("bob", "b@example.com", "pw-bob-12345")
    with pytest.raises(DomainError) as exc:
        membership_add(
            project=project,
            username="bob",
            role=Role.ADMIN,
            password="a-long-password-1",
            actor=admin_user,
        )
    assert exc.value.field == "username"
    assert not Membership.objects.filter(project=project, user=bob).exists()
    bob.refresh_from_db()
    assert bob.check_password("pw-bob-12345")
