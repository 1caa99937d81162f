"""The OpenAPI schema types the service API's answers and documents the SDK features payload."""

import json
from typing import Any

import pytest
from django.core.management import call_command

SERVICE_OPERATIONS = {
    ("/api/v1/assign/", "post", "200"): {"unit_id", "assignments"},
    ("/api/v1/assign/bulk/", "post", "200"): {"results"},
    ("/api/v1/events/", "post", "202"): {"accepted", "duplicates", "rejected", "ignored"},
    ("/api/v1/events/beacon/", "post", "202"): {"accepted", "duplicates", "rejected", "ignored"},
    ("/api/features/{client_key}", "get", "200"): {"status", "features", "dateUpdated"},
}


def dumped_schema(tmp_path: Any) -> dict[str, Any]:
    out = tmp_path / "schema.json"
    call_command("spectacular", "--file", str(out), "--format", "openapi-json")
    return json.loads(out.read_text())


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def response_object(schema: dict[str, Any], path: str, method: str, code: str) -> dict[str, Any]:
    response = schema["paths"][path][method]["responses"][code]
    return resolve(schema, response["content"]["application/json"]["schema"])


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return dumped_schema(tmp_path_factory.mktemp("schema"))


@pytest.mark.parametrize(("operation", "fields"), SERVICE_OPERATIONS.items())
def test_service_responses_are_typed_objects(schema, operation, fields):
    body = response_object(schema, *operation)
    assert body.get("type") == "object"
    assert fields <= set(body.get("properties", {}))


def test_event_batch_answer_names_each_rejected_and_ignored_field(schema):
    body = response_object(schema, "/api/v1/events/", "post", "202")
    rejected = resolve(schema, body["properties"]["rejected"]["items"])
    ignored = resolve(schema, body["properties"]["ignored"]["items"])
    assert set(rejected["properties"]) == {"index", "field", "message"}
    assert set(ignored["properties"]) == {"index", "reason", "message"}


def test_assignments_are_typed_per_experiment(schema):
    body = response_object(schema, "/api/v1/assign/", "post", "200")
    per_experiment = resolve(schema, body["properties"]["assignments"]["additionalProperties"])
    assert {"variant", "value", "in_experiment"} <= set(per_experiment["properties"])
    bulk = response_object(schema, "/api/v1/assign/bulk/", "post", "200")
    assert {"unit_id", "assignments"} <= set(
        resolve(schema, bulk["properties"]["results"]["items"])["properties"]
    )


def test_features_path_is_documented_public_with_its_etag(schema):
    operation = schema["paths"]["/api/features/{client_key}"]["get"]
    assert operation.get("security", []) in ([], [{}])  # public: no credentials
    assert {"200", "304", "404"} <= set(operation["responses"])
    assert "ETag" in operation["responses"]["200"]["headers"]
    assert "If-None-Match" in {p["name"] for p in operation["parameters"]}
    assert set(schema["paths"]["/api/features/{client_key}"]) == {"get"}
