"""Test data for the analysis pipeline: exposures and metric events written to the tables."""

from datetime import datetime, timedelta

import numpy as np

from assignments.models import Exposure, MetricEvent
from experiments.models import Experiment


def simulate(
    experiment: Experiment,
    *,
    units: dict[str, int],
    start: datetime,
    rates: dict[str, dict[str, float]],
    seed: int = 1,
    prefix: str = "",
    spacing: timedelta = timedelta(seconds=10),
) -> None:
    """``units`` per variant key, exposed ``spacing`` apart from ``start``; then per unit a
    Poisson(rate) number of events of each name in ``rates[variant][name]``, 1 to 60 minutes
    after its exposure, each with value 1 (a "revenue" name gets an exponential value)."""
    rng = np.random.default_rng(seed)
    variants = {v.key: v for v in experiment.variants.all()}
    exposures, events = [], []
    i = 0
    for key, n in units.items():
        for _ in range(n):
            unit = f"{prefix}u{i}"
            at = start + spacing * i
            exposures.append(
                Exposure(
                    project_id=experiment.project_id,
                    event_id=f"{prefix}x{i}",
                    experiment=experiment,
                    variant=variants[key],
                    unit_id=unit,
                    ts=at,
                )
            )
            for name, rate in rates[key].items():
                for j in range(rng.poisson(rate)):
                    value = float(rng.exponential(20)) if name == "revenue" else 1.0
                    events.append(
                        MetricEvent(
                            project_id=experiment.project_id,
                            event_id=f"{prefix}{name}-{i}-{j}",
                            name=name,
                            unit_id=unit,
                            value=value,
                            ts=at + timedelta(minutes=int(rng.integers(1, 60))),
                        )
                    )
            i += 1
    Exposure.objects.bulk_create(exposures, batch_size=2000)
    MetricEvent.objects.bulk_create(events, batch_size=2000)
