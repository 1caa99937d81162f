"""The client library's OpenFeature provider (``abacus_client.openfeature``) through
OpenFeature's own evaluation API against a live server: values, variation keys and reasons
equal POST /api/v1/evaluate for every flag kind and value type; unknown flags, wrong types and
a missing targeting key answer OpenFeature's error codes with the caller's default; exposures
are recorded as the client records them (and not for a wrong type); hooks run; track sends a
metric event."""

import socket

import pytest
import requests
from abacus_client import AbacusClient
from abacus_client.openfeature import REASONS, AbacusProvider
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.hook import Hook
from openfeature.provider import ProviderStatus
from openfeature.track import TrackingEventDetails

from assignments.models import Exposure, FlagExposure, MetricEvent
from tests.clients.world import FAST, World, attributes, server_evaluate

# flag -> OpenFeature's typed method for it.
FLAGS = {
    "new-checkout": "boolean",  # force rule on a condition, then a rollout
    "banner": "string",  # force rule, rollout on a condition, default
    "dark": "boolean",  # off
    "plain": "boolean",  # no rules: the default
    "exp-flag": "boolean",  # an experiment rule
    "gated": "boolean",  # a prerequisite (new-checkout serves on)
    "limit": "integer",  # a number flag with integers
    "ratio": "float",  # a number flag with fractions, in a rollout
    "config": "object",  # a JSON flag
}


@pytest.fixture
def world(live_server, project, admin_user, metrics):
    """The client tests' flags plus a prerequisite, number and JSON flags."""
    made = World(live_server, project, admin_user).common()
    flag = made.flag
    flag("gated", default="on", prerequisites=[{"flag": "new-checkout", "variations": ["on"]}])
    flag("limit", type="number", variations=[
        {"key": "low", "value": 10}, {"key": "high", "value": 25},
    ], off_variation="low", rules=[
        {"type": "force", "condition": {"plan": "pro"}, "variation": "high"},
    ], default="low")  # fmt: skip
    flag("ratio", type="number", variations=[
        {"key": "half", "value": 0.5}, {"key": "more", "value": 1.5},
    ], off_variation="half", rules=[
        {"type": "rollout", "hash_attribute": "id", "weights": {"half": 0.5, "more": 0.5}},
    ], default="half")  # fmt: skip
    flag("config", type="json", variations=[
        {"key": "small", "value": {"color": "blue", "size": 1}},
        {"key": "large", "value": {"color": "red", "size": 3, "tags": ["x"]}},
    ], off_variation="small", rules=[
        {"type": "force", "condition": {"country": "US"}, "variation": "large"},
    ], default="small")  # fmt: skip
    return made.serve()


@pytest.fixture
def openfeature_api():
    """OpenFeature's API is global: providers and hooks are cleared after each test."""
    yield api
    api.clear_hooks()
    api.clear_providers()


@pytest.fixture
def client(world, openfeature_api):
    # No polling during the comparison: one request at a time on SQLite's shared in-memory test
    # database (as in test_python_client.py).
    made = AbacusClient(world["url"], world["client_key"], world["key"], refresh_interval=3600)
    yield made
    made.close(timeout=5)


def _details(of_client, kind, key, default, context):  # noqa: ANN001
    return getattr(of_client, f"get_{kind}_details")(key, default, context)


DEFAULTS = {"boolean": False, "string": "none", "integer": -1, "float": -1.0, "object": {}}


def test_openfeature_evaluation_equals_the_server(world, client, openfeature_api, request):
    openfeature_api.set_provider_and_wait(AbacusProvider(client))
    of = openfeature_api.get_client()
    assert of.get_provider_status() == ProviderStatus.READY
    assert openfeature_api.get_provider_metadata().name == "abacus"
    server = requests.Session()
    server.headers["Authorization"] = f"Bearer {world['key']}"
    request.addfinalizer(server.close)
    reasons = set()
    for i in range(300):
        unit, attrs = f"u{i}", attributes(i)
        answer = server_evaluate(server, world["url"], unit, attrs)
        context = EvaluationContext(targeting_key=unit, attributes=attrs)
        for key, kind in FLAGS.items():
            details = _details(of, kind, key, DEFAULTS[kind], context)
            expected = answer[key]
            assert details.error_code is None, (key, unit, details.error_message)
            assert (details.value, details.variant, details.reason) == (
                expected["value"], expected["variation"], REASONS[expected["reason"]]
            ), (key, unit, attrs)  # fmt: skip
            assert details.flag_metadata["reason"] == expected["reason"]
            if expected.get("rule_id"):
                assert details.flag_metadata["rule_id"] == expected["rule_id"]
            reasons.add(expected["reason"])
    # Every abacus reason was met, each mapped as documented.
    assert reasons == {"off", "prerequisite", "rule", "rollout", "experiment", "default"}
    assert {REASONS[r] for r in reasons} == {
        Reason.DISABLED, Reason.TARGETING_MATCH, Reason.SPLIT, Reason.DEFAULT
    }  # fmt: skip
    # Value types as OpenFeature checks them: a float for a float flag, an int for an integer.
    ratio = of.get_float_details("ratio", 0.0, EvaluationContext("u1"))
    assert type(ratio.value) is float and ratio.variant in ("half", "more")
    limit = of.get_integer_details("limit", 0, EvaluationContext("u1", {"plan": "pro"}))
    assert (limit.value, limit.variant) == (25, "high") and type(limit.value) is int
    # An experiment served as a feature (its variants' values are objects): variant keys, SPLIT.
    seen = set()
    for i in range(50):
        details = of.get_object_details("checkout-v2", {}, EvaluationContext(f"u{i}"))
        assert (
            details.reason == Reason.SPLIT and details.flag_metadata["experiment"] == "checkout-v2"
        )
        seen.add((details.variant, details.value["v"]))
    assert seen == {("control", 1), ("treatment", 2)}
    # The plain value methods.
    assert of.get_boolean_value("plain", False, EvaluationContext("u1")) is True
    assert of.get_string_value("banner", "none", EvaluationContext("u7", {"plan": "pro"})) == "red"


def test_error_codes_return_the_default(client, openfeature_api, project):
    openfeature_api.set_provider_and_wait(AbacusProvider(client))
    of = openfeature_api.get_client()
    ctx = EvaluationContext(targeting_key="u1", attributes={"country": "FR"})
    unknown = of.get_boolean_details("nope", True, ctx)
    assert (unknown.value, unknown.error_code, unknown.reason) == (
        True, ErrorCode.FLAG_NOT_FOUND, Reason.ERROR
    )  # fmt: skip
    wrong = [("string", "new-checkout"), ("boolean", "banner"), ("integer", "ratio"),
             ("float", "config"), ("object", "limit"), ("integer", "new-checkout")]  # fmt: skip
    for kind, key in wrong:
        details = _details(of, kind, key, DEFAULTS[kind], ctx)
        assert details.error_code == ErrorCode.TYPE_MISMATCH, (kind, key)
        assert details.value == DEFAULTS[kind] and details.reason == Reason.ERROR
        assert details.variant is None
    missing = of.get_boolean_details("new-checkout", False, EvaluationContext())
    assert missing.error_code == ErrorCode.TARGETING_KEY_MISSING and missing.value is False
    # An `id` attribute stands in for the targeting key.
    by_id = of.get_boolean_details(
        "new-checkout", False, EvaluationContext(None, ctx.attributes | {"id": "u1"})
    )
    assert by_id.error_code is None and by_id.value is True
    # A wrong type is refused before evaluating: no exposure for a unit served the default.
    assert client.flush(timeout=10)
    assert not FlagExposure.objects.filter(project=project, unit_id="u1").exclude(
        flag__key="new-checkout"
    ).exists()  # fmt: skip


def test_exposures_through_the_provider(client, openfeature_api, project):
    openfeature_api.set_provider_and_wait(AbacusProvider(client))
    of = openfeature_api.get_client()
    for _ in range(3):
        for i in range(40):
            ctx = EvaluationContext(f"u{i}", attributes(i))
            of.get_boolean_value("new-checkout", False, ctx)
            of.get_boolean_value("exp-flag", False, ctx)
            of.get_string_value("new-checkout", "x", ctx)  # TYPE_MISMATCH: no exposure
    assert client.flush(timeout=10)
    flag_rows = FlagExposure.objects.filter(project=project)
    assert flag_rows.filter(flag__key="new-checkout").count() == 40
    assert flag_rows.filter(flag__key="exp-flag").count() == 40
    assert Exposure.objects.filter(project=project, experiment__key="flag-exp").count() == 40
    # Variations recorded are the variants OpenFeature reported.
    for row in flag_rows.filter(flag__key="new-checkout")[:10]:
        i = int(row.unit_id[1:])
        context = EvaluationContext(row.unit_id, attributes(i))
        details = of.get_boolean_details("new-checkout", False, context)
        assert details.variant == row.variation
    # track=False: evaluations without exposures.
    openfeature_api.set_provider_and_wait(AbacusProvider(client, track=False), domain="quiet")
    quiet = openfeature_api.get_client("quiet")
    for i in range(100, 120):
        assert quiet.get_boolean_details("plain", False, EvaluationContext(f"u{i}")).value is True
    assert client.flush(timeout=10)
    assert not FlagExposure.objects.filter(project=project, flag__key="plain").exists()


class Recorder(Hook):
    """Records each stage; ``before`` adds a country, which a force rule targets."""

    def __init__(self) -> None:
        self.calls = []

    def before(self, hook_context, hints):  # noqa: ANN001
        self.calls.append(
            ("before", hook_context.flag_key, hook_context.evaluation_context.targeting_key)
        )
        return EvaluationContext(attributes={"country": "FR"})

    def after(self, hook_context, details, hints):  # noqa: ANN001
        self.calls.append(("after", details.flag_key, details.variant, details.reason))

    def error(self, hook_context, exception, hints):  # noqa: ANN001
        self.calls.append(("error", hook_context.flag_key, type(exception).__name__))

    def finally_after(self, hook_context, details, hints):  # noqa: ANN001
        self.calls.append(("finally", details.flag_key))


def test_hooks_run(client, openfeature_api):
    openfeature_api.set_provider_and_wait(AbacusProvider(client))
    recorder = Recorder()
    openfeature_api.add_hooks([recorder])
    of = openfeature_api.get_client()
    # A unit outside the 30% rollout without a country; the hook's country forces it on.
    units = (f"u{i}" for i in range(100))
    outside = next(
        u for u in units if client.evaluate("new-checkout", u, track=False).value is False
    )
    details = of.get_boolean_details("new-checkout", False, EvaluationContext(outside))
    assert (details.value, details.variant, details.reason) == (True, "on", Reason.TARGETING_MATCH)
    assert details.flag_metadata["rule_id"]
    assert recorder.calls == [
        ("before", "new-checkout", outside),
        ("after", "new-checkout", "on", Reason.TARGETING_MATCH),
        ("finally", "new-checkout"),
    ]
    recorder.calls.clear()
    of.get_boolean_details("nope", False, EvaluationContext("u1"))
    assert [c[0] for c in recorder.calls] == ["before", "error", "finally"]
    assert recorder.calls[1] == ("error", "nope", "FlagNotFoundError")


def test_track_sends_a_metric_event(client, openfeature_api, project):
    openfeature_api.set_provider_and_wait(AbacusProvider(client))
    of = openfeature_api.get_client()
    of.track("purchase", EvaluationContext("u9"), TrackingEventDetails(9.5, {"category": "shoes"}))
    of.track("purchase", EvaluationContext("u10"))
    of.track("purchase", EvaluationContext())  # no unit: not sent
    assert client.flush(timeout=10)
    rows = {r.unit_id: r for r in MetricEvent.objects.filter(project=project)}
    assert set(rows) == {"u9", "u10"}
    assert rows["u9"].value == 9.5 and rows["u9"].properties == {"category": "shoes"}
    assert rows["u10"].value == 1.0


def test_initialize_fetches_the_payload(world, openfeature_api, request):
    lazy = AbacusClient(world["url"], world["client_key"], world["key"], wait_for_payload=False,
                        refresh_interval=3600)  # fmt: skip
    request.addfinalizer(lambda: lazy.close(timeout=5))
    assert not lazy.ready
    openfeature_api.set_provider_and_wait(AbacusProvider(lazy))
    details = openfeature_api.get_client().get_boolean_details(
        "plain", False, EvaluationContext("u1")
    )
    assert (details.value, details.variant, details.reason) == (True, "on", Reason.DEFAULT)


def test_no_payload_answers_provider_not_ready(openfeature_api):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    down = AbacusClient(f"http://127.0.0.1:{port}", "ck", "key", **FAST)
    try:
        openfeature_api.set_provider_and_wait(AbacusProvider(down))
        details = openfeature_api.get_client().get_boolean_details(
            "x", True, EvaluationContext("u1")
        )
        assert (details.value, details.error_code) == (True, ErrorCode.PROVIDER_NOT_READY)
    finally:
        down.close(timeout=0.5)
