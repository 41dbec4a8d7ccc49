"""The pure rules of quotas and budgets: which limit a new instance would pass, and how far
a monthly budget is spent."""

from __future__ import annotations

from decimal import Decimal

from chalicelib.domain.limits import (
    Limits,
    Usage,
    budget_warning_due,
    first_exceeded,
    refuses_provisions,
    stops_instances,
)

HOURLY = Decimal("3.06")


def test_no_limits_let_everything_through():
    assert first_exceeded(Limits(), Usage(100, 400, Decimal("999")), 8, HOURLY) is None


def test_the_instance_limit_counts_the_new_one():
    limits = Limits(max_live_instances=2)
    assert first_exceeded(limits, Usage(1, 1, HOURLY), 1, HOURLY) is None
    passed = first_exceeded(limits, Usage(2, 2, HOURLY), 1, HOURLY)
    assert (passed.limit, passed.value, passed.usage) == ("maxLiveInstances", "2", "2")


def test_gpus_and_burn_rate_add_the_new_instances_share():
    assert first_exceeded(Limits(max_live_gpus=4), Usage(1, 1, HOURLY), 4, HOURLY).limit == (
        "maxLiveGpus"
    )
    assert first_exceeded(Limits(max_live_gpus=4), Usage(1, 0, HOURLY), 4, HOURLY) is None
    burn = Limits(max_burn_rate=Decimal("6.12"))
    assert first_exceeded(burn, Usage(1, 1, HOURLY), 1, HOURLY) is None  # exactly at it
    assert first_exceeded(burn, Usage(1, 1, HOURLY), 1, Decimal("3.07")).limit == (
        "maxBurnRateUsdPerHour"
    )


def test_a_limit_of_zero_refuses_any_instance():
    assert first_exceeded(Limits(max_live_instances=0), Usage(), 1, HOURLY).limit == (
        "maxLiveInstances"
    )


def test_the_budget_warns_at_80_percent_and_acts_at_100_by_its_action():
    warn = Limits(monthly_budget=Decimal("100"))
    refuse = Limits(monthly_budget=Decimal("100"), budget_action="refuse")
    stop = Limits(monthly_budget=Decimal("100"), budget_action="stop")

    assert not budget_warning_due(warn, Decimal("79.99"))
    assert budget_warning_due(warn, Decimal("80"))
    assert not refuses_provisions(warn, Decimal("150"))
    assert not refuses_provisions(refuse, Decimal("99.99"))
    assert refuses_provisions(refuse, Decimal("100")) and not stops_instances(refuse, Decimal(100))
    assert refuses_provisions(stop, Decimal("100")) and stops_instances(stop, Decimal("100"))


def test_no_budget_never_warns_or_refuses():
    assert not budget_warning_due(Limits(), Decimal("1e9"))
    assert not refuses_provisions(Limits(budget_action="stop"), Decimal("1e9"))


def test_a_users_own_limits_replace_the_defaults_field_by_field():
    defaults = Limits(max_live_instances=5, monthly_budget=Decimal("100"))

    own = defaults.overridden_by({"max_live_instances": 1, "monthly_budget": None})

    assert own == Limits(max_live_instances=1, monthly_budget=None)
