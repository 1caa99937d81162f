"""Layers that hold: overlapping ranges of one layer are refused at save and at start, and the
layer page and API show the taken and free ranges."""

import threading

import pytest
from django.db import close_old_connections, connection
from django.test import Client

from core.errors import DomainError
from experiments.layers import layers_for_project
from experiments.models import Experiment, ExperimentStatus, Role
from experiments.services import (
    experiment_conclude,
    experiment_create,
    experiment_rollback,
    experiment_start,
    experiment_update,
)
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db


def draft(project, key, start, end, layer="search", **overrides):
    return experiment_create(
        project=project,
        **experiment_payload(key, layer=layer, layer_start=start, layer_end=end, **overrides),
    )


def test_create_refuses_an_overlap_naming_the_other_experiment_and_its_range(project, metrics):
    running_experiment(project, "left", layer="search", layer_start=0.0, layer_end=0.5)
    with pytest.raises(DomainError) as exc:
        draft(project, "right", 0.4, 1.0)
    assert exc.value.field == "layer_start"
    assert "'left'" in exc.value.message and "0-0.5" in exc.value.message
    assert not Experiment.objects.filter(key="right").exists()


def test_touching_ranges_other_layers_and_no_layer_are_fine(project, metrics):
    draft(project, "left", 0.0, 0.5)
    draft(project, "right", 0.5, 1.0)
    draft(project, "other-layer", 0.0, 1.0, layer="checkout")
    experiment_create(project=project, **experiment_payload("no-layer-a"))
    experiment_create(project=project, **experiment_payload("no-layer-b"))


def test_a_draft_holds_its_range(project, metrics):
    draft(project, "first", 0.2, 0.6)
    with pytest.raises(DomainError, match="'first'") as exc:
        draft(project, "second", 0.0, 0.3)
    assert exc.value.field == "layer_start"


@pytest.mark.parametrize("finish", ["conclude", "rollback"])
def test_a_finished_experiment_frees_its_range(project, metrics, finish):
    old = running_experiment(project, "old", layer="search", layer_start=0.0, layer_end=1.0)
    if finish == "conclude":
        experiment_conclude(experiment=old, decision="control")
    else:
        experiment_rollback(experiment=old)
    new = draft(project, "new", 0.0, 1.0)
    experiment_start(experiment=new)


def test_update_refuses_moving_into_a_taken_range(project, metrics):
    draft(project, "left", 0.0, 0.5)
    right = draft(project, "right", 0.5, 1.0)
    with pytest.raises(DomainError, match="'left' \\(draft, 0-0.5\\)") as exc:
        experiment_update(experiment=right, layer_start=0.3)
    assert exc.value.field == "layer_start"
    right.refresh_from_db()
    assert right.layer_start == 0.5
    experiment_update(experiment=right, name="Renamed", layer_start=0.5)  # its own range is fine


def test_start_refuses_when_a_live_experiment_took_the_range_meanwhile(project, metrics):
    """Rows saved before the rule (or by a racing save) may overlap: the start checks again."""
    first = draft(project, "first", 0.0, 0.5)
    second = draft(project, "second", 0.6, 1.0)
    Experiment.objects.filter(pk=second.pk).update(layer_start=0.4)  # as the old data had it
    experiment_start(experiment=first)
    with pytest.raises(DomainError, match="'first' \\(running, 0-0.5\\)") as exc:
        experiment_start(experiment=second)
    assert exc.value.field == "layer_start"
    second.refresh_from_db()
    assert second.status == ExperimentStatus.DRAFT


def test_layers_selector_lists_taken_and_free_ranges(project, metrics):
    running_experiment(project, "a", layer="search", layer_start=0.1, layer_end=0.3)
    draft(project, "b", 0.5, 0.7)
    done = running_experiment(project, "c", layer="search", layer_start=0.8, layer_end=1.0)
    experiment_rollback(experiment=done)
    draft(project, "x", 0.0, 1.0, layer="checkout")
    layers = {usage.layer: usage for usage in layers_for_project(project)}
    assert sorted(layers) == ["checkout", "search"]
    search = layers["search"]
    assert [(s.experiment, s.status, s.start, s.end) for s in search.taken] == [
        ("a", "running", 0.1, 0.3),
        ("b", "draft", 0.5, 0.7),
    ]
    assert search.free == [(0.0, 0.1), (0.3, 0.5), (0.7, 1.0)]
    assert layers["checkout"].free == []


def test_layers_api(api, project, metrics):
    running_experiment(project, "a", layer="search", layer_start=0.0, layer_end=0.5)
    r = api.get("/api/v1/projects/shop/layers/")
    assert r.status_code == 200
    assert r.json() == [
        {
            "layer": "search",
            "taken": [{"experiment": "a", "status": "running", "start": 0.0, "end": 0.5}],
            "free": [[0.5, 1.0]],
        }
    ]


def test_layers_api_needs_membership(project, metrics, django_user_model):
    from rest_framework.test import APIClient

    stranger = django_user_model.objects.create_user("mallory", "m@example.com", "pw-12345")
    client = APIClient()
    client.force_authenticate(stranger)
    assert client.get("/api/v1/projects/shop/layers/").status_code == 404


def test_api_create_overlap_is_a_400_naming_layer_start(api, project, metrics):
    running_experiment(project, "left", layer="search", layer_start=0.0, layer_end=0.5)
    payload = experiment_payload("right", layer="search", layer_start=0.4, layer_end=1.0)
    r = api.post("/api/v1/projects/shop/experiments/", payload, format="json")
    assert r.status_code == 400
    assert r.json()["field"] == "layer_start" and "'left'" in r.json()["detail"]


def test_layer_page_shows_the_bar_and_is_linked_from_the_list(project, metrics, make_member):
    running_experiment(project, "left", layer="search", layer_start=0.0, layer_end=0.5)
    client = Client()
    client.force_login(make_member("viewer", Role.VIEWER))
    listing = client.get("/p/shop/").content.decode()
    assert 'href="/p/shop/layers/"' in listing
    page = client.get("/p/shop/layers/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-layer="search"' in html and 'data-experiment="left"' in html
    assert '<rect class="taken status-running" x="0.0" y="0" width="500.0"' in html
    assert '<rect class="free" x="500.0" y="0" width="500.0"' in html
    assert "style=" not in html.split("<main", 1)[-1] and "<script>" not in html
    one = client.get("/p/shop/layers/search/")
    assert one.status_code == 200 and 'data-experiment="left"' in one.content.decode()
    empty = client.get("/p/shop/layers/new-layer/")
    assert empty.status_code == 200 and '<rect class="free" x="0.0" y="0" width="1000.0"' in (
        empty.content.decode()
    )


def test_layer_page_with_no_layers(project, metrics, make_member):
    client = Client()
    client.force_login(make_member("viewer", Role.VIEWER))
    r = client.get("/p/shop/layers/")
    assert r.status_code == 200
    assert "No experiment of this project uses a layer" in r.content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the race needs row and advisory locks"
)
def test_two_concurrent_starts_on_overlapping_ranges_cannot_both_succeed(project, metrics):
    """Two drafts that overlap (saved before the rule) start at the same moment in two threads:
    the layer's advisory lock lets one check at a time, so exactly one starts."""
    a = draft(project, "a", 0.0, 0.6)
    b = draft(project, "b", 0.7, 1.0)
    Experiment.objects.filter(pk=b.pk).update(layer_start=0.4)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def start(experiment):
        try:
            barrier.wait()
            experiment_start(experiment=experiment)
            outcomes[experiment.key] = "started"
        except DomainError as exc:
            outcomes[experiment.key] = exc.field
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=start, args=(e,)) for e in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes.values()) == ["layer_start", "started"]
    statuses = Experiment.objects.filter(key__in=["a", "b"]).values_list("status", flat=True)
    assert sorted(statuses) == ["draft", "running"]
