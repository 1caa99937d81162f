"""A flag on in production, health metrics, and a simulated service writing flag exposures and
metric events for a release's units."""

from __future__ import annotations

import uuid
from datetime import datetime

import numpy as np
import pytest

from assignments.models import FlagExposure, MetricEvent
from experiments.models import Environment
from experiments.services import metric_create
from flags.services import flag_create, flag_environment_update


@pytest.fixture
def production(project):
    return Environment.objects.get(project=project, key="production")


@pytest.fixture
def flag(project, production, admin_user):
    flag = flag_create(project=project, key="new-checkout", name="New checkout", actor=admin_user)
    flag_environment_update(
        flag=flag, environment=production, actor=admin_user, enabled=True, default_variation="off"
    )
    return flag


@pytest.fixture
def health_metrics(project):
    return {
        "errors": metric_create(
            project=project, key="error-rate", name="Errors per request", kind="ratio",
            event_name="error", denominator_event="request", direction="decrease",
        ),
        "latency": metric_create(
            project=project, key="latency-p95", name="Latency p95", kind="quantile",
            event_name="latency_ms", direction="decrease", quantile=0.95,
        ),
        "conversion": metric_create(
            project=project, key="purchase", name="Purchase", kind="binomial",
            event_name="purchase",
        ),
    }  # fmt: skip


def simulate(
    *,
    project,
    environment,
    flag,
    at: datetime,
    units: int,
    share_new: float,
    rng: np.random.Generator,
    error_rate: dict[str, float] | None = None,
    latency_scale: dict[str, float] | None = None,
    prefix: str = "u",
) -> dict[str, list[str]]:
    """``units`` units exposed at ``at`` (new with probability ``share_new``), each making 3
    requests with an error probability and a latency per variation, and converting at 10%."""
    error_rate = error_rate or {"on": 0.05, "off": 0.05}
    latency_scale = latency_scale or {"on": 100.0, "off": 100.0}
    exposures, events, served = [], [], {"on": [], "off": []}

    def event(name: str, unit: str, value: float) -> MetricEvent:
        return MetricEvent(
            project=project, event_id=uuid.uuid4().hex, name=name, unit_id=unit, value=value, ts=at
        )

    for i in range(units):
        unit = f"{prefix}{i}"
        variation = "on" if rng.random() < share_new else "off"
        served[variation].append(unit)
        exposures.append(FlagExposure(project=project, event_id=uuid.uuid4().hex,
                                      environment=environment, flag=flag,
                                      variation=variation, unit_id=unit, ts=at))  # fmt: skip
        for _ in range(3):
            events.append(event("request", unit, 1.0))
            value = float(rng.exponential(latency_scale[variation]))
            events.append(event("latency_ms", unit, value))
            if rng.random() < error_rate[variation]:
                events.append(event("error", unit, 1.0))
        if rng.random() < 0.1:
            events.append(event("purchase", unit, 1.0))
    FlagExposure.objects.bulk_create(exposures)
    MetricEvent.objects.bulk_create(events)
    return served
