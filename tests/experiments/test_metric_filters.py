"""Metrics from event properties: a metric's filters and value property are checked once (the
service), and the API and the form show each refusal on its field."""

import pytest
from django.test import Client

from core.errors import DomainError
from experiments import services
from experiments.filters import MAX_FILTERS, MAX_IN_VALUES, clean_filters
from experiments.models import Metric
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db


def f(prop="plan", op="eq", value="pro"):
    return {"property": prop, "op": op, "value": value}


def test_a_metric_stores_its_filters_and_value_property(project):
    filters = [
        f(),
        f("amount", "gte", 2),
        f("plan", "in", ["pro", 3, True]),
        f("tags", "contains", "x"),
    ]
    metric = services.metric_create(
        project=project, key="rev", name="Revenue", kind="mean", event_name="purchase",
        filters=filters, value_property="amount",
    )  # fmt: skip
    metric.refresh_from_db()
    assert metric.filters == filters and metric.value_property == "amount"
    assert metric.filters_text == (
        'plan = "pro" and amount ≥ 2 and plan in ["pro", 3, true] and tags contains "x"'
    )


BAD_FILTERS = [
    ("not a list", {"plan": "pro"}, "must be a list"),
    ("not an object", ["plan = pro"], "exactly"),
    ("a missing key", [{"property": "plan", "op": "eq"}], "exactly"),
    ("an extra key", [{**f(), "and": 1}], "exactly"),
    ("an unknown op", [f(op="like")], "filters[0].op must be one of eq, neq, in, gt"),
    ("in without a list", [f(op="in", value="pro")], "non-empty list"),
    ("in with an empty list", [f(op="in", value=[])], "non-empty list"),
    ("in with a list inside", [f(op="in", value=[["pro"]])], "filters[0].value[0]"),
    ("in too long", [f(op="in", value=list(range(MAX_IN_VALUES + 1)))], "more than 100"),
    ("gt with a string", [f(op="gt", value="3")], "a number for 'gt'"),
    ("lte with a boolean", [f(op="lte", value=True)], "a number for 'lte'"),
    ("gt with a huge integer", [f(op="gt", value=10**400)], "finite number"),
    ("contains a number", [f(op="contains", value=3)], "non-empty string"),
    ("contains nothing", [f(op="contains", value="")], "non-empty string"),
    ("eq with an object", [f(value={"a": 1})], "a string, a number or true/false"),
    ("eq with null", [f(value=None)], "a string, a number or true/false"),
    ("a property with a quote", [f(prop="plan'--")], "is not a property name"),
    ("a property with a space", [f(prop="my plan")], "is not a property name"),
    ("an empty property", [f(prop="")], "non-empty string"),
    ("a property too long", [f(prop="p" * 101)], "longer than 100"),
    ("a value too long", [f(value="v" * 201)], "longer than 200"),
    ("too many filters", [f()] * (MAX_FILTERS + 1), "at most 10 filters"),
]


@pytest.mark.parametrize(
    "filters, message", [c[1:] for c in BAD_FILTERS], ids=[c[0] for c in BAD_FILTERS]
)
def test_bad_filters_are_refused_naming_the_field(project, filters, message):
    with pytest.raises(DomainError) as err:
        services.metric_create(
            project=project, key="m", name="m", kind="count", event_name="purchase",
            filters=filters,
        )  # fmt: skip
    assert err.value.field == "filters"
    assert message in err.value.message
    assert not Metric.objects.exists()


def test_property_names_may_hold_dots_and_dashes(project):
    filters = [f("utm.source", "eq", "mail"), f("plan-type", "neq", "free"), f("_x1", "lt", 0)]
    assert [c.property for c in clean_filters(filters)] == ["utm.source", "plan-type", "_x1"]


@pytest.mark.parametrize(
    "kind, value_property, message",
    [
        ("binomial", "amount", "counts events and reads no value"),
        ("count", "amount", "counts events and reads no value"),
        ("mean", "amount total", "is not a property name"),
        ("mean", 3, "must be a property name"),
    ],
)
def test_value_property_is_refused_where_it_means_nothing(project, kind, value_property, message):
    with pytest.raises(DomainError) as err:
        services.metric_create(
            project=project, key="m", name="m", kind=kind, event_name="purchase",
            value_property=value_property,
        )  # fmt: skip
    assert err.value.field == "value_property" and message in err.value.message


def test_filters_and_value_property_are_frozen_while_a_live_experiment_uses_the_metric(
    project, metrics
):
    running_experiment(project)
    purchase = Metric.objects.get(key="purchase")
    with pytest.raises(DomainError, match="live experiment") as err:
        services.metric_update(metric=purchase, filters=[f()])
    assert err.value.field == "filters"
    revenue = services.metric_create(
        project=project, key="rev", name="Revenue", kind="mean", event_name="purchase"
    )
    revenue = services.metric_update(metric=revenue, value_property="amount", filters=[f()])
    assert revenue.value_property == "amount"


# --- the API --------------------------------------------------------------------------------


def test_api_creates_and_returns_a_filtered_metric(project, api):
    body = {
        "key": "pro-revenue",
        "name": "Revenue from paid plans",
        "kind": "mean",
        "event_name": "purchase",
        "filters": [f("plan", "in", ["pro", "team"]), f("amount", "gt", 0)],
        "value_property": "amount",
    }
    response = api.post(f"/api/v1/projects/{project.slug}/metrics/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["filters"] == body["filters"]
    assert response.json()["value_property"] == "amount"
    got = api.get(f"/api/v1/projects/{project.slug}/metrics/pro-revenue/").json()
    assert got["filters"] == body["filters"] and got["value_property"] == "amount"
    changed = api.patch(
        f"/api/v1/projects/{project.slug}/metrics/pro-revenue/",
        {"filters": [], "value_property": ""},
        format="json",
    )
    assert changed.status_code == 200 and changed.json()["filters"] == []


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"filters": [f(op="like")]}, "filters"),  # the serializer's choice
        ({"filters": [{"property": "plan"}]}, "filters"),  # the serializer's shape
        ({"filters": [f(op="gt", value="x")]}, "filters"),  # the service's rule
        ({"filters": [f(prop="a;b")]}, "filters"),
        ({"filters": "plan = pro"}, "filters"),
        ({"value_property": "amount", "kind": "count"}, "value_property"),
    ],
)
def test_api_refuses_bad_filters_with_a_400_naming_the_field(project, api, extra, field):
    body = {"key": "m", "name": "m", "kind": "mean", "event_name": "purchase", **extra}
    response = api.post(f"/api/v1/projects/{project.slug}/metrics/", body, format="json")
    assert response.status_code == 400, response.content
    data = response.json()
    assert data.get("field") == field or field in data, data
    assert not Metric.objects.exists()


# --- the form -------------------------------------------------------------------------------


@pytest.fixture
def alice(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


FORM = {
    "key": "pro-revenue",
    "name": "Revenue from paid plans",
    "description": "",
    "kind": "mean",
    "event_name": "purchase",
    "denominator_event": "",
    "direction": "increase",
    "conversion_window_hours": "72",
    "winsorize_quantile": "",
    "cuped": "on",
}


def test_the_form_takes_filters_as_json_and_the_list_describes_them(project, alice):
    data = {
        **FORM,
        "filters": '[{"property": "plan", "op": "eq", "value": "pro"}]',
        "value_property": "amount",
    }
    response = alice.post("/p/shop/metrics/new/", data)
    assert response.status_code == 302
    metric = Metric.objects.get(key="pro-revenue")
    assert metric.filters == [f()] and metric.value_property == "amount"
    page = alice.get("/p/shop/metrics/").content.decode()
    assert "where plan = &quot;pro&quot;" in page and "value: <code>amount</code>" in page
    edit = alice.get("/p/shop/metrics/pro-revenue/edit/").content.decode()
    assert "&quot;property&quot;: &quot;plan&quot;" in edit


@pytest.mark.parametrize(
    "filters, message",
    [
        ("[{", "Not valid JSON"),
        ('[{"property": "plan", "op": "in", "value": "pro"}]', "non-empty list"),
    ],
)
def test_the_form_shows_a_bad_filter_on_its_field(project, alice, filters, message):
    response = alice.post("/p/shop/metrics/new/", {**FORM, "filters": filters})
    assert response.status_code == 200 and not Metric.objects.exists()
    assert any(message in e for e in response.context["form"].errors["filters"])
