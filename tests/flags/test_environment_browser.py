"""Events from browsers in the API and on the settings page: members read an environment's
public browser key and origins, admins set origins, turn the key on or off and rotate it; bad
origins are a 400 (or a message) naming the field."""

import pytest
from rest_framework.test import APIClient

from experiments.models import Environment, Role

pytestmark = pytest.mark.django_db

B = "/api/v1/projects/shop/environments/staging/browser/"


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def staging(project):
    return Environment.objects.get(project=project, key="staging")


def test_admin_sets_origins_and_turns_the_key_on(api, project):
    r = api.patch(
        B, {"origins": ["https://Shop.example/", "http://localhost:3000"], "enabled": True}, "json"
    )
    assert r.status_code == 200, r.content
    body = r.json()
    key = staging(project).browser_key
    assert body == {
        "environment": "staging",
        "enabled": True,
        "key": key,
        "origins": ["https://shop.example", "http://localhost:3000"],
        "endpoint": f"/api/v1/events/beacon?key={key}",
        "script": "/static/abacus/beacon.js",
    }
    rotated = api.post(B + "rotate").json()
    assert rotated["key"] not in (None, key) and rotated["origins"] == body["origins"]
    off = api.patch(B, {"enabled": False}, "json").json()
    assert off["enabled"] is False and off["key"] is None
    assert staging(project).browser_key is None


def test_a_bad_origin_is_a_400_naming_origins(api, project):
    r = api.patch(B, {"origins": ["https://shop.example/path"]}, "json")
    assert r.status_code == 400
    assert r.json()["field"] == "origins" and "not an origin" in r.json()["detail"]
    assert api.patch(B, {"origins": "https://x.example"}, "json").status_code == 400
    assert staging(project).browser_origins == []


def test_members_read_admins_change(project, make_member, api):
    api.patch(B, {"enabled": True}, "json")
    for role in (Role.VIEWER, Role.EDITOR):
        member = client_for(make_member(f"m-{role}", role))
        assert member.get(B).status_code == 200
        assert member.patch(B, {"origins": ["https://x.example"]}, "json").status_code == 403
        assert member.post(B + "rotate").status_code == 403
    assert staging(project).browser_origins == []


def test_another_projects_member_sees_nothing(project, django_user_model):
    from experiments.services import project_create

    stranger = django_user_model.objects.create_user("s", "s@example.com", None)
    project_create(slug="theirs", name="Theirs", owner=stranger)
    assert client_for(stranger).get(B).status_code == 404
    assert client_for(stranger).post(B + "rotate").status_code == 404


def test_unknown_environment_is_404(api, project):
    assert api.get("/api/v1/projects/shop/environments/nope/browser/").status_code == 404


def test_settings_page_shows_keys_and_edits_origins(client, admin_user, project):
    client.force_login(admin_user)
    page = client.get("/p/shop/settings/")
    assert b'id="browser-events"' in page.content and b"abacus/beacon.js" in page.content
    base = "/p/shop/environments/staging/browser"
    r = client.post(f"{base}/origins/", {"origins": "https://shop.example\nhttp://localhost:3000"})
    assert r.status_code == 302 and r["Location"].endswith("/p/shop/settings/#browser-events")
    assert staging(project).browser_origins == ["https://shop.example", "http://localhost:3000"]
    client.post(f"{base}/rotate/")
    key = staging(project).browser_key
    assert key and key.encode() in client.get("/p/shop/settings/").content
    client.post(f"{base}/off/")
    assert staging(project).browser_key is None


def test_settings_page_says_why_an_origin_is_refused(client, admin_user, project):
    client.force_login(admin_user)
    r = client.post("/p/shop/environments/staging/browser/origins/", {"origins": "*"}, follow=True)
    assert b"is not allowed: list each site" in r.content
    assert staging(project).browser_origins == []


def test_editors_cannot_change_browser_settings_on_the_page(client, make_member, project):
    client.force_login(make_member("ed", Role.EDITOR))
    r = client.post("/p/shop/environments/staging/browser/rotate/")
    assert r.status_code == 403
    assert staging(project).browser_key is None
