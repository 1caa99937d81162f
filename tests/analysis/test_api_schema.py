"""The OpenAPI schema types the results API's answers (the shape of `snapshot_json`)."""

import json
from typing import Any

import pytest
from django.core.management import call_command

RESULTS = "/api/v1/projects/{project}/experiments/{key}/results"
HISTORY = "/api/v1/projects/{project}/experiments/{key}/results/history"
ANALYZE = "/api/v1/projects/{project}/experiments/{key}/analyze"

SNAPSHOT_FIELDS = {
    "experiment",
    "snapshot_id",
    "computed_at",
    "data_through",
    "phase",
    "method",
    "look_kind",
    "total_units",
    "metrics",
    "arms",
    "health",
    "recommendation",
    "actions",
}
ROW_FIELDS = {
    "metric",
    "kind",
    "role",
    "variant",
    "control_n",
    "variant_n",
    "control_mean",
    "variant_mean",
    "lift_abs",
    "lift_rel",
    "ci_low",
    "ci_high",
    "p_value",
    "fixed_p_value",
    "adjusted_p_value",
    "alpha",
    "method",
    "significant",
    "status",
    "margin",
    "details",
}
RECOMMENDATION_FIELDS = {
    "action",
    "cause",
    "reasons",
    "ship_variant",
    "extra_units",
    "extra_days",
}


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a $ref (possibly wrapped in allOf/oneOf for nullable objects)."""
    while True:
        if "$ref" in node:
            node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
        elif "type" not in node and len(node.get("allOf", node.get("oneOf", []))) >= 1:
            node = next(n for n in node.get("allOf", node.get("oneOf")) if n.get("type") != "null")
        else:
            return node


def response_object(schema: dict[str, Any], path: str, method: str, code: str) -> dict[str, Any]:
    response = schema["paths"][path][method]["responses"][code]
    return resolve(schema, response["content"]["application/json"]["schema"])


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("schema") / "schema.json"
    call_command("spectacular", "--file", str(out), "--format", "openapi-json")
    return json.loads(out.read_text())


def check_snapshot(schema: dict[str, Any], snapshot: dict[str, Any]) -> None:
    assert snapshot.get("type") == "object"
    props = snapshot["properties"]
    assert set(props) >= SNAPSHOT_FIELDS
    row = resolve(schema, props["metrics"]["items"])
    assert row.get("type") == "object" and set(row["properties"]) >= ROW_FIELDS
    recommendation = resolve(schema, props["recommendation"])
    assert set(recommendation["properties"]) >= RECOMMENDATION_FIELDS
    arm = resolve(schema, props["arms"]["items"])
    assert {"variant", "action"} <= set(arm["properties"])
    assert "srm_p_value" in resolve(schema, props["health"])["properties"]


def test_results_response_is_the_typed_snapshot_with_the_last_run(schema):
    body = response_object(schema, RESULTS, "get", "200")
    check_snapshot(schema, body)
    assert "last_run" in body["properties"]


def test_results_history_response_lists_typed_snapshots(schema):
    body = response_object(schema, HISTORY, "get", "200")
    assert body.get("type") == "object"
    assert {"experiment", "snapshots"} <= set(body["properties"])
    check_snapshot(schema, resolve(schema, body["properties"]["snapshots"]["items"]))


def test_analyze_response_names_the_queued_run(schema):
    body = response_object(schema, ANALYZE, "post", "202")
    assert {"run_id", "status"} <= set(body["properties"])
