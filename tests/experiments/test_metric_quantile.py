"""Quantile metrics (release health): the quantile is required and in (0, 1), and experiments
refuse them (their analysis takes conversions, counts, means and ratios)."""

import pytest

from core.errors import DomainError
from experiments import services
from tests.factories import experiment_payload

pytestmark = pytest.mark.django_db


def test_quantile_metric_needs_its_quantile(project):
    with pytest.raises(DomainError) as err:
        services.metric_create(
            project=project, key="p95", name="p95", kind="quantile", event_name="latency_ms"
        )
    assert err.value.field == "quantile"
    metric = services.metric_create(
        project=project, key="p95", name="p95", kind="quantile", event_name="latency_ms",
        quantile=0.95,
    )  # fmt: skip
    assert metric.quantile == 0.95 and metric.cuped is False


def test_other_kinds_drop_the_quantile(project):
    metric = services.metric_create(
        project=project, key="m", name="m", kind="mean", event_name="x", quantile=0.5
    )
    assert metric.quantile is None


def test_api_refuses_a_quantile_out_of_range(project, api):
    client = api
    body = {"key": "p", "name": "p", "kind": "quantile", "event_name": "latency_ms"}
    response = client.post(f"/api/v1/projects/{project.slug}/metrics/", {**body, "quantile": 1.5})
    assert response.status_code == 400 and "quantile" in response.json()
    response = client.post(f"/api/v1/projects/{project.slug}/metrics/", {**body, "quantile": 0.99})
    assert response.status_code == 201, response.content
    assert response.json()["quantile"] == 0.99


def test_experiments_refuse_quantile_metrics(project):
    services.metric_create(
        project=project, key="p95", name="p95", kind="quantile", event_name="latency_ms",
        quantile=0.95,
    )  # fmt: skip
    with pytest.raises(DomainError, match="quantile metric") as err:
        services.experiment_create(
            project=project, **experiment_payload(metrics=[{"metric": "p95", "role": "guardrail"}])
        )
    assert err.value.field == "metrics"
