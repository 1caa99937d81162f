"""The flags, experiments and key the client library's tests evaluate against a live server
(test_python_client.py and test_openfeature.py share them)."""

import time
from typing import Any

from experiments.services import api_key_create
from flags.services import flag_create, flag_environment_update
from tests.factories import running_experiment

FAST = {"refresh_interval": 0.2, "flush_interval": 0.05, "backoff_base": 0.05, "backoff_max": 0.3}


def attributes(i: int) -> dict:
    return {"country": ["FR", "DE", "US"][i % 3], "plan": "pro" if i % 7 == 0 else "free"}


def server_evaluate(session, url, unit, attrs):  # noqa: ANN001
    """POST /api/v1/evaluate; a 503 (SQLite's shared in-memory test database briefly locked by
    the server's usage flush) is asked again."""
    for _ in range(5):
        response = session.post(
            f"{url}/api/v1/evaluate", json={"unit_id": unit, "attributes": attrs}, timeout=10
        )
        if response.status_code != 503:
            break
        time.sleep(0.1)
    assert response.status_code == 200, response.text
    return response.json()["flags"]


class World:
    """Flags in production made by ``flag(...)``; ``serve()`` adds the ingest + evaluate key and
    returns what a client needs."""

    def __init__(self, live_server, project, admin_user) -> None:  # noqa: ANN001
        self.live_server, self.project, self.actor = live_server, project, admin_user
        self.production = project.environments.get(key="production")

    def flag(self, key: str, enabled: bool = True, rules=(), default=None, **kwargs: Any):  # noqa: ANN001, ANN201
        made = flag_create(project=self.project, key=key, name=key, actor=self.actor, **kwargs)
        flag_environment_update(
            flag=made, environment=self.production, actor=self.actor, enabled=enabled,
            rules=list(rules), **({"default_variation": default} if default else {}),
        )  # fmt: skip
        return made

    def common(self) -> "World":
        """Flags of each kind (rules, rollouts, a segment of attributes, off, no rules, an
        experiment rule) and a running experiment."""
        flag = self.flag
        flag("new-checkout", rules=[
            {"type": "force", "condition": {"country": "FR"}, "variation": "on"},
            {"type": "rollout", "hash_attribute": "id", "weights": {"on": 0.3, "off": 0.7}},
        ])  # fmt: skip
        flag("banner", type="string", variations=[
            {"key": "a", "value": "blue"}, {"key": "b", "value": "green"},
            {"key": "c", "value": "red"},
        ], off_variation="a", rules=[
            {"type": "force", "condition": {"plan": "pro"}, "variation": "c"},
            {"type": "rollout", "condition": {"country": "DE"}, "hash_attribute": "id",
             "weights": {"a": 0.5, "b": 0.5}},
        ], default="c")  # fmt: skip
        flag("dark", enabled=False)
        flag("plain", default="on")
        running_experiment(self.project, key="checkout-v2")
        running_experiment(self.project, key="flag-exp", variants=[
            {"key": "off", "weight": 0.5, "is_control": True, "value": False},
            {"key": "on", "weight": 0.5, "value": True},
        ])  # fmt: skip
        flag("exp-flag", rules=[{"type": "experiment", "experiment": "flag-exp"}])
        return self

    def serve(self) -> dict[str, str]:
        key = api_key_create(project=self.project, name="svc", scopes=["ingest", "evaluate"]).secret
        return {
            "url": self.live_server.url,
            "client_key": self.production.client_key,
            "key": key,
        }
