"""abacus client for services: evaluates flags and experiments locally from the environment's
payload (through the `growthbook` SDK), tracks exposures (de-duplicated) and events, and sends
them in the background in batches with retries (docs/clients.md). For analysts,
`abacus_client.notebook` loads results and exports into pandas."""

from abacus_client.batcher import EventBatcher
from abacus_client.client import AbacusClient, Evaluation

__all__ = ["AbacusClient", "Evaluation", "EventBatcher"]
__version__ = "0.2.0"
