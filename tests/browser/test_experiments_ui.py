"""A product manager runs an experiment end to end in headless Chromium: log in, define it with
two metrics and a guardrail, see the weights refused, fix them, start, ramp, pause, resume and
conclude, with the power calculator answering as they type."""

import re

import pytest
from playwright.sync_api import expect

from experiments.models import AuditLog, Experiment, Role
from experiments.services import membership_set, metric_create
from tests.browser.conftest import save_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pm(django_user_model, project):
    user = django_user_model.objects.create_user("pam", "pam@example.com", "pw-pam-12345")
    membership_set(project=project, user=user, role=Role.EDITOR)
    for key, name, kind, event, direction in [
        ("purchase", "Purchase conversion", "binomial", "purchase", "increase"),
        ("revenue", "Revenue per user", "mean", "purchase", "increase"),
        ("checkout-errors", "Checkout errors", "count", "checkout_error", "decrease"),
    ]:
        metric_create(
            project=project, key=key, name=name, kind=kind, event_name=event, direction=direction
        )
    return user


def test_pm_creates_fixes_starts_ramps_pauses_and_concludes(page, login, live_server, pm):
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations of lifecycle buttons
    login("pam", "pw-pam-12345")
    page.goto(f"{live_server.url}/p/shop/")
    page.click("#new-experiment")
    expect(page.locator("h1")).to_contain_text("New experiment")

    page.fill("#id_name", "Checkout v2")
    page.fill("#id_key", "checkout-v2")
    page.fill("#id_hypothesis", "A one-page checkout raises purchase conversion.")
    page.fill("#id_coverage", "0.2")
    page.fill('[name="variants-1-value"]', '{"layout": "one-page"}')
    page.fill('[name="variants-1-weight"]', "0.6")
    expect(page.locator("#weight-total")).to_contain_text("they must sum to 1")

    page.select_option('[name="metrics-0-metric"]', "purchase")
    page.click("#add-metric")
    page.select_option('[name="metrics-1-metric"]', "revenue")
    page.select_option('[name="metrics-1-role"]', "secondary")
    page.click("#add-metric")
    page.select_option('[name="metrics-2-metric"]', "checkout-errors")
    page.select_option('[name="metrics-2-role"]', "guardrail")
    page.fill('[name="metrics-2-non_inferiority_margin"]', "0.02")

    # The power calculator answers while the PM types.
    page.fill("#calc-baseline", "0.1")
    page.fill("#calc-mde", "0.05")
    page.fill("#calc-daily", "20000")
    # The weights are 0.5/0.6 here (refused on save below): the calculator sizes each arm.
    expect(page.locator("#calc-result")).to_contain_text("units in total", timeout=10_000)
    expect(page.locator("#calc-result")).to_contain_text("(control)")
    expect(page.locator("#calc-result")).to_contain_text("days")
    page.click("#calc-apply")
    assert int(page.input_value("#id_planned_sample_size")) > 100_000
    page.select_option("#calc-method", "sequential")
    expect(page.locator("#calc-result")).to_contain_text("fixed-horizon test")

    page.click("#save")
    expect(page.locator("#form-errors")).to_be_visible()
    expect(page.locator("#variants-errors")).to_contain_text(
        "Weights must sum to 1; they sum to 1.1"
    )
    save_screenshot(page, "experiment-form-weights-error")
    assert not Experiment.objects.exists()

    page.fill('[name="variants-1-weight"]', "0.5")
    expect(page.locator("#weight-total")).to_contain_text("Weights sum to 1.")
    page.click("#save")
    expect(page).to_have_url(re.compile(r"/p/shop/experiments/checkout-v2/$"))
    expect(page.locator("#status")).to_have_text("Draft")
    expect(page.locator("#experiment-metrics")).to_contain_text("Guardrail")

    page.click("#action-start")
    expect(page.locator("#status")).to_have_text("Running")
    expect(page.locator("#audit-log")).to_contain_text("experiment.start")
    save_screenshot(page, "experiment-running")

    page.fill("#id_coverage", "0.5")
    page.click("#action-ramp")
    expect(page.locator("#messages")).to_contain_text("Coverage raised to 50%")
    page.fill("#id_coverage", "0.2")
    page.click("#action-ramp")
    expect(page.locator("#messages")).to_contain_text("Coverage may only go up")

    page.click("#action-pause")
    expect(page.locator("#status")).to_have_text("Paused")
    page.click("#action-resume")
    expect(page.locator("#status")).to_have_text("Running")

    page.select_option("#id_decision", "treatment")
    page.click("#action-conclude")
    expect(page.locator("#status")).to_have_text("Concluded")
    expect(page.locator("#decision")).to_contain_text("ship treatment")
    save_screenshot(page, "experiment-concluded")

    experiment = Experiment.objects.get(key="checkout-v2")
    assert experiment.decision_variant == "treatment" and experiment.coverage == 0.5
    assert experiment.owner == pm
    roles = sorted(em.role for em in experiment.experiment_metrics.all())
    assert roles == ["guardrail", "primary", "secondary"]
    actions = list(
        AuditLog.objects.filter(experiment=experiment).values_list("action", "actor_label")
    )
    assert ("experiment.conclude", "pam") in actions and ("experiment.ramp", "pam") in actions
    assert page.outside_requests == []


def test_admin_manages_metrics_members_and_keys(page, login, live_server, pm, project):
    page.on("dialog", lambda dialog: dialog.accept())
    login("alice", "pw-alice-123")
    page.goto(f"{live_server.url}/p/shop/metrics/")
    page.click("#new-metric")
    page.fill("#id_name", "Average order value")
    page.fill("#id_key", "aov")
    page.select_option("#id_kind", "ratio")
    page.fill("#id_event_name", "revenue")
    page.click("#save-metric")
    expect(page.locator(".field-error")).to_contain_text("needs a denominator event")
    page.fill("#id_denominator_event", "order")
    page.click("#save-metric")
    expect(page.locator("#metrics")).to_contain_text("Average order value")
    save_screenshot(page, "metric-catalog")

    page.click("#nav-settings")
    page.fill("#member-add #id_username", "newbie")
    page.select_option("#member-add #id_role", "analyst")
    page.fill("#member-add #id_password", "a-long-password-1")
    page.click("#member-add button[type=submit]")
    expect(page.locator("#member-table")).to_contain_text("newbie")

    page.fill("#api-key-create #id_name", "checkout-api")
    page.check("#api-key-create input[value=ingest]")
    page.click("#api-key-create button[type=submit]")
    secret = page.input_value("#secret-value")
    assert secret.startswith("abk_")
    save_screenshot(page, "settings-new-key")
    page.goto(f"{live_server.url}/p/shop/settings/")
    assert secret not in page.content()
    page.click('#api-key-table tr[data-name="checkout-api"] button')
    expect(page.locator('#api-key-table tr[data-name="checkout-api"]')).to_contain_text("revoked")
    assert page.outside_requests == []


def test_power_calculator_weights_ramp_errors_and_recent_data(
    page, login, live_server, pm, project
):
    """The calculator sends the weights, the ramp plan and the looks, shows an impossible input
    next to its field, and fills the baseline from the metric's recent events."""
    from datetime import timedelta

    from django.utils import timezone

    from assignments.models import MetricEvent

    five_days_ago = timezone.now() - timedelta(days=5)
    MetricEvent.objects.bulk_create(
        [
            MetricEvent(
                project=project,
                event_id=f"v{u}",
                name="visit",
                unit_id=f"u{u}",
                ts=five_days_ago,
            )
            for u in range(10)
        ]
        + [
            MetricEvent(
                project=project,
                event_id=f"p{u}",
                name="purchase",
                unit_id=f"u{u}",
                ts=five_days_ago + timedelta(hours=1),
            )
            for u in range(3)
        ]
    )
    login("pam", "pw-pam-12345")
    page.goto(f"{live_server.url}/p/shop/experiments/new/")
    page.select_option('[name="metrics-0-metric"]', "purchase")

    page.fill("#calc-baseline", "0.96")
    page.fill("#calc-mde", "0.05")
    expect(page.locator("#calc-error-mde")).to_contain_text("1.008", timeout=10_000)
    expect(page.locator("#calc-result")).to_contain_text("Cannot compute")
    expect(page.locator("#calc-apply")).to_be_disabled()

    page.fill("#calc-baseline", "0.1")
    expect(page.locator("#calc-result")).to_contain_text("units per variant", timeout=10_000)
    expect(page.locator("#calc-error-mde")).to_have_text("")
    expect(page.locator("#calc-result")).to_contain_text("100 looks")

    page.fill('[name="variants-0-weight"]', "0.9")
    page.fill('[name="variants-1-weight"]', "0.1")
    expect(page.locator("#calc-result")).to_contain_text("(control)", timeout=10_000)

    page.fill("#calc-daily", "20000")
    page.click("#add-stage")
    page.fill('[name="ramp-0-coverage"]', "0.1")
    expect(page.locator("#calc-result")).to_contain_text("through the ramp plan", timeout=10_000)
    page.fill('[name="ramp-0-coverage"]', "2")
    expect(page.locator("#calc-error-other")).to_contain_text("ramp", timeout=10_000)
    page.fill('[name="ramp-0-coverage"]', "0.1")

    page.click("#calc-use-data")
    expect(page.locator("#calc-data-note")).to_contain_text("From 10 units", timeout=10_000)
    assert page.input_value("#calc-baseline") == "0.3"
    assert page.input_value("#calc-kind") == "binomial"
    expect(page.locator("#calc-result")).to_contain_text("(control)", timeout=10_000)
    save_screenshot(page, "power-calculator")
    assert page.outside_requests == []
