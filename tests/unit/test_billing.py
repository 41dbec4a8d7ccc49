"""Cost is a pure function of the hourly rate, the provider's billing rule and two times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.domain.billing import billable_seconds, cost_for_seconds, run_cost
from chalicelib.domain.catalog import BillingRule

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
EC2 = BillingRule("ec2-linux-per-second", increment_seconds=1, minimum_seconds=60, source="x")
AZURE = BillingRule("azure-vm-per-second", increment_seconds=1, minimum_seconds=0, source="x")
PER_MINUTE = BillingRule("per-minute", increment_seconds=60, minimum_seconds=0, source="x")


def after(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def test_a_run_shorter_than_a_minute_is_billed_as_sixty_seconds_on_ec2():
    assert billable_seconds(T0, after(seconds=30), EC2) == 60


def test_a_run_shorter_than_a_minute_is_billed_as_it_ran_on_azure():
    assert billable_seconds(T0, after(seconds=30), AZURE) == 30


def test_a_partial_second_is_billed_as_a_whole_second():
    assert billable_seconds(T0, after(seconds=90, milliseconds=200), EC2) == 91


def test_a_run_of_exactly_an_hour_is_billed_as_3600_seconds():
    assert billable_seconds(T0, after(hours=1), EC2) == 3600


def test_usage_is_rounded_up_to_the_billing_increment():
    assert billable_seconds(T0, after(seconds=61), PER_MINUTE) == 120
    assert billable_seconds(T0, after(seconds=120), PER_MINUTE) == 120


@pytest.mark.parametrize(("rule", "expected"), [(EC2, 60), (AZURE, 0)])
def test_an_end_before_the_start_is_billed_as_no_usage(rule, expected):
    assert billable_seconds(T0, after(seconds=-300), rule) == expected


@pytest.mark.parametrize(
    ("hourly", "seconds", "expected"),
    [
        ("0.526", 3600, "0.526000"),  # g4dn.xlarge for one hour
        ("0.526", 91, "0.013296"),  # 47.866 / 3600 = 0.01329611...
        ("0.526", 60, "0.008767"),  # 31.56 / 3600 = 0.00876666...
        ("3.912", 61, "0.066287"),  # 238.632 / 3600 = 0.06628666...
        ("3.06", 9001, "7.650850"),  # 27543.06 / 3600 exactly
        ("0.90", 30, "0.007500"),
        ("7.20", 0, "0.000000"),
    ],
)
def test_cost_for_seconds_is_pro_rata_to_a_millionth_of_a_dollar(hourly, seconds, expected):
    cost = cost_for_seconds(Decimal(hourly), seconds)
    assert cost == Decimal(expected)
    assert str(cost) == expected


@pytest.mark.parametrize(
    ("hourly", "expected"),
    [
        ("0.0018", "0.000001"),  # 0.0000005 exactly: half rounds up, not to even
        ("0.009", "0.000003"),  # 0.0000025 exactly: half rounds up, not to even
    ],
)
def test_a_cost_exactly_half_way_rounds_up(hourly, expected):
    assert cost_for_seconds(Decimal(hourly), 1) == Decimal(expected)


def test_run_cost_of_ninety_seconds_and_a_fifth_on_g4dn_xlarge():
    cost = run_cost(Decimal("0.526"), EC2, T0, after(seconds=90, milliseconds=200))
    assert cost == Decimal("0.013296")


def test_run_cost_of_a_ten_second_ec2_run_is_the_one_minute_minimum():
    assert run_cost(Decimal("0.90"), EC2, T0, after(seconds=10)) == Decimal("0.015000")


def test_an_instance_that_never_started_costs_nothing():
    cost = run_cost(Decimal("7.20"), EC2, None, after(hours=5))
    assert cost == Decimal("0")
    assert str(cost) == "0.000000"
