"""Cost as a pure function of the hourly rate, the billing rule and two timestamps."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from chalicelib.domain.catalog import BillingRule

SECONDS_PER_HOUR = Decimal(3600)
# Costs are kept to a millionth of a dollar; rounding happens once, at the end.
COST_QUANTUM = Decimal("0.000001")


def billable_seconds(started_at: datetime, ended_at: datetime, rule: BillingRule) -> int:
    """Seconds the provider charges for a run from started_at to ended_at."""
    elapsed = max(0.0, (ended_at - started_at).total_seconds())
    increments = math.ceil(elapsed / rule.increment_seconds)
    return max(increments * rule.increment_seconds, rule.minimum_seconds)


def cost_for_seconds(hourly_usd: Decimal, seconds: int) -> Decimal:
    return (hourly_usd * Decimal(seconds) / SECONDS_PER_HOUR).quantize(
        COST_QUANTUM, rounding=ROUND_HALF_UP
    )


def run_cost(
    hourly_usd: Decimal,
    rule: BillingRule,
    started_at: datetime | None,
    ended_at: datetime,
) -> Decimal:
    """Cost of a run; nothing is charged for an instance that never started at the cloud."""
    if started_at is None:
        return Decimal("0").quantize(COST_QUANTUM)
    return cost_for_seconds(hourly_usd, billable_seconds(started_at, ended_at, rule))
