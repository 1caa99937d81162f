"""Experiments targeting a saved segment: the services, the REST API, the web form, the
segment's usage and its protected deletion."""

import pytest
from django.test import Client

from core.errors import DomainError
from experiments.models import AuditLog, Experiment, Segment
from experiments.selectors import experiment_spec
from experiments.services import experiment_create, experiment_update, project_create
from flags.selectors import segment_usage
from flags.services import segment_create, segment_delete, segment_update
from tests.experiments.test_views import form_data
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(project, admin_user):
    return segment_create(
        project=project,
        key="staff",
        name="Staff",
        actor=admin_user,
        condition={"email": {"$regex": "@shop\\.test$"}},
        include=["vip-1"],
        exclude=["intern-9"],
    )


@pytest.fixture
def beta(project, admin_user):
    return segment_create(
        project=project, key="beta", name="Beta", actor=admin_user, condition={"beta": True}
    )


def _audits(experiment: Experiment, action: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(target=experiment.key, action=action).order_by("pk"))


# --- services ---------------------------------------------------------------------------------


def test_create_with_a_segment_ands_it_with_the_targeting(project, metrics, staff):
    experiment = experiment_create(
        project=project, segment="staff", **experiment_payload(targeting={"country": "US"})
    )
    assert experiment.segment == staff
    condition = experiment_spec(experiment).condition
    assert condition["$and"][0] == {"country": "US"}
    assert "vip-1" in str(condition["$and"][1]) and "intern-9" in str(condition["$and"][1])
    assert _audits(experiment, "experiment.create")[0].after["segment"] == "staff"


@pytest.mark.parametrize("none", [None, ""])
def test_create_without_a_segment(project, metrics, none):
    experiment = experiment_create(project=project, segment=none, **experiment_payload())
    assert experiment.segment is None
    assert _audits(experiment, "experiment.create")[0].after["segment"] is None


def test_unknown_segment_is_refused_naming_the_field(project, metrics, admin_user):
    other = project_create(slug="other", name="Other", owner=admin_user)
    segment_create(project=other, key="theirs", name="Theirs", actor=admin_user)
    for key in ("nope", "theirs"):  # a segment of another project is unknown here
        with pytest.raises(DomainError) as caught:
            experiment_create(project=project, segment=key, **experiment_payload())
        assert caught.value.field == "segment" and key in caught.value.message
    assert not Experiment.objects.filter(project=project).exists()
    draft = experiment_create(project=project, **experiment_payload())
    with pytest.raises(DomainError) as caught:
        experiment_update(experiment=draft, segment="nope")
    assert caught.value.field == "segment"


def test_update_sets_changes_and_clears_the_segment_of_a_draft(project, metrics, staff, beta):
    draft = experiment_create(project=project, **experiment_payload())
    experiment_update(experiment=draft, segment="staff")
    draft.refresh_from_db()
    assert draft.segment == staff and draft.phase == 0
    experiment_update(experiment=draft, name="Renamed")  # left out: unchanged
    draft.refresh_from_db()
    assert draft.segment == staff
    experiment_update(experiment=draft, segment="beta")
    experiment_update(experiment=draft, segment="")
    draft.refresh_from_db()
    assert draft.segment is None and draft.phase == 0
    audits = _audits(draft, "experiment.update")
    changes = [(a.before["segment"], a.after["segment"]) for a in audits]
    assert changes == [(None, "staff"), ("staff", "staff"), ("staff", "beta"), ("beta", None)]


def test_a_segment_change_of_a_running_experiment_starts_a_new_phase(project, metrics, staff, beta):
    experiment = running_experiment(project)
    assert experiment.phase == 0
    experiment_update(experiment=experiment, segment="staff")
    experiment.refresh_from_db()
    assert experiment.phase == 1 and experiment.phase_started_at is not None
    first_phase_start = experiment.phase_started_at
    experiment_update(experiment=experiment, segment="staff", name="Same audience")
    experiment.refresh_from_db()
    assert experiment.phase == 1 and experiment.phase_started_at == first_phase_start
    experiment_update(experiment=experiment, segment="beta")
    experiment_update(experiment=experiment, segment=None)
    experiment.refresh_from_db()
    assert experiment.phase == 3 and experiment.segment is None


def test_editing_a_segment_reserves_the_experiments_using_it(project, metrics, staff):
    """The experiments' served version is their updated_at: a segment edit must move it."""
    experiment = running_experiment(project, segment="staff")
    before = Experiment.objects.get(pk=experiment.pk).updated_at
    segment_update(segment=staff, include=["vip-1", "vip-2"])
    assert Experiment.objects.get(pk=experiment.pk).updated_at > before
    assert "vip-2" in str(experiment_spec(Experiment.objects.get(pk=experiment.pk)).condition)


# --- usage and deletion -----------------------------------------------------------------------


def test_usage_lists_the_experiments_and_deletion_is_refused(project, metrics, staff, beta):
    running_experiment(project, segment="staff")
    experiment_create(project=project, segment="staff", **experiment_payload("pricing"))
    usage = segment_usage(project)
    assert usage["staff"] == ["experiment:checkout-v2", "experiment:pricing"]
    assert usage["beta"] == []
    with pytest.raises(DomainError) as caught:
        segment_delete(segment=staff)
    assert "experiment:checkout-v2" in caught.value.message
    assert "experiment:pricing" in caught.value.message
    assert Segment.objects.filter(pk=staff.pk).exists()
    segment_delete(segment=beta)
    assert not Segment.objects.filter(pk=beta.pk).exists()


def test_deleting_a_segment_in_use_is_a_400_naming_its_users(project, metrics, staff, api):
    running_experiment(project, segment="staff")
    r = api.delete("/api/v1/projects/shop/segments/staff/")
    assert r.status_code == 400, r.content
    assert "experiment:checkout-v2" in str(r.json())
    assert Segment.objects.filter(pk=staff.pk).exists()


def test_a_delete_racing_an_experiment_is_refused_not_a_500(project, metrics, staff, monkeypatch):
    """The check and the delete are apart: PROTECT's error becomes the same refusal."""
    import flags.services.segments as segments

    running_experiment(project, segment="staff")
    monkeypatch.setattr(segments, "segment_users", lambda segment: [])
    with pytest.raises(DomainError) as caught:
        segments.segment_delete(segment=staff)
    assert caught.value.field == "key" and "in use" in caught.value.message
    assert Segment.objects.filter(pk=staff.pk).exists()


# --- REST API ---------------------------------------------------------------------------------

URL = "/api/v1/projects/shop/experiments/"


def test_api_round_trips_the_segment(project, metrics, staff, beta, api):
    r = api.post(URL, {**experiment_payload(), "segment": "staff"}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["segment"] == "staff"
    assert api.get(f"{URL}checkout-v2/").json()["segment"] == "staff"
    assert api.get(URL).json()[0]["segment"] == "staff"
    r = api.patch(f"{URL}checkout-v2/", {"segment": "beta"}, format="json")
    assert r.status_code == 200 and r.json()["segment"] == "beta"
    r = api.patch(f"{URL}checkout-v2/", {"name": "Renamed"}, format="json")
    assert r.json()["segment"] == "beta"
    r = api.patch(f"{URL}checkout-v2/", {"segment": None}, format="json")
    assert r.status_code == 200 and r.json()["segment"] is None
    r = api.post(URL, experiment_payload("pricing"), format="json")
    assert r.json()["segment"] is None


def _names_segment(body: dict) -> bool:
    """A serializer's {"segment": [...]} or a service's {"detail", "field": "segment"}."""
    return "segment" in body or body.get("field") == "segment"


@pytest.mark.parametrize("value", ["nope", "Not a slug!", 7, ["staff"]])
def test_api_unknown_or_malformed_segment_is_a_400_naming_it(project, metrics, staff, api, value):
    r = api.post(URL, {**experiment_payload(), "segment": value}, format="json")
    assert r.status_code == 400, r.content
    assert _names_segment(r.json())
    assert not Experiment.objects.exists()
    api.post(URL, experiment_payload(), format="json")
    r = api.patch(f"{URL}checkout-v2/", {"segment": value}, format="json")
    assert r.status_code == 400 and _names_segment(r.json())
    assert Experiment.objects.get().segment is None


def test_openapi_schema_types_the_segment(api):
    schema = api.get("/api/v1/schema/", {"format": "json"}).json()
    segment = schema["components"]["schemas"]["Experiment"]["properties"]["segment"]
    assert segment["nullable"] is True
    assert {option["type"] for option in segment["oneOf"]} == {"string"}
    assert "AND" in segment["description"]


# --- the web form -----------------------------------------------------------------------------


@pytest.fixture
def alice(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_form_offers_the_segments_none_first_and_saves_the_choice(
    project, metrics, staff, beta, alice
):
    page = alice.get("/p/shop/experiments/new/").content.decode()
    start = page.index('name="segment"')
    select = page[start : page.index("</select>", start)]
    assert select.index('value=""') < select.index('value="beta"') < select.index('value="staff"')
    assert "AND-ed with the targeting" in page
    r = alice.post("/p/shop/experiments/new/", form_data(segment="staff"))
    assert r.status_code == 302, r.content.decode()[:2000]
    experiment = Experiment.objects.get(key="checkout-v2")
    assert experiment.segment == staff
    edit = alice.get("/p/shop/experiments/checkout-v2/edit/").content.decode()
    assert '<option value="staff" selected>' in edit
    detail = alice.get("/p/shop/experiments/checkout-v2/").content.decode()
    assert 'id="segment"' in detail and "/p/shop/segments/staff/" in detail
    r = alice.post("/p/shop/experiments/checkout-v2/edit/", form_data(segment=""))
    assert r.status_code == 302
    experiment.refresh_from_db()
    assert experiment.segment is None


def test_form_shows_a_segment_error_on_the_field(project, metrics, staff, alice, monkeypatch):
    r = alice.post("/p/shop/experiments/new/", form_data(segment="nope"))
    assert r.status_code == 200
    body = r.content.decode()
    field = body[body.index('id="field-segment"') :]
    assert "field-error" in field[: field.index("</div>")]
    assert not Experiment.objects.exists()
    # A segment deleted between the page and the save: the service's refusal, on the field.
    import experiments.forms.experiments as form_module

    original = form_module.ExperimentForm.__init__

    def stale_choices(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.fields["segment"].choices += [("gone", "Gone")]

    monkeypatch.setattr(form_module.ExperimentForm, "__init__", stale_choices)
    body = alice.post("/p/shop/experiments/new/", form_data(segment="gone")).content.decode()
    field = body[body.index('id="field-segment"') :]
    assert "Unknown segment" in field[: field.index("</div>")]
    assert not Experiment.objects.exists()
