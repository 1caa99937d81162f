"""Webhook signing: the headers a delivery carries, the events a project's webhook receives,
and the HMAC-SHA256 signature (docs/operations.md "Webhooks" shows how receivers verify it)."""

import hashlib
import hmac

SIGNATURE_HEADER = "X-Abacus-Signature"
EVENT_HEADER = "X-Abacus-Event"
DELIVERY_HEADER = "X-Abacus-Delivery"
# What a project's webhook receives (X-Abacus-Event), as the settings page lists it.
WEBHOOK_EVENT_HELP = (
    ("experiment.rolled_back", "an experiment was rolled back by the automation"),
    ("experiment.ramped", "a ramp plan moved an experiment's coverage to its next stage"),
    (
        "experiment.recommendation_changed",
        "an analysis recommends something else than the one before (keep, extend, rollback)",
    ),
    ("experiment.srm_detected", "an analysis newly finds a sample-ratio mismatch"),
)


def webhook_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
