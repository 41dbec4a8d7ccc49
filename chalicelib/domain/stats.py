"""Fleet figures for GET /api/instances/stats: counts, burn rate, cost and the saving."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from chalicelib.domain.billing import COST_QUANTUM, run_cost
from chalicelib.domain.catalog import BillingRule
from chalicelib.domain.instance import Instance
from chalicelib.domain.states import InstanceStatus


@dataclass(frozen=True)
class FleetStats:
    by_status: dict[str, int]
    by_provider: dict[str, int]
    total: int
    live: int
    burn_rate_per_hour: Decimal
    total_cost: Decimal
    always_on_cost: Decimal
    saving: Decimal
    saving_percent: Decimal | None
    period_start: datetime | None


def summarize(instances: Iterable[Instance], now: datetime, providers: Iterable[str]) -> FleetStats:
    """What the instances cost, against keeping the same machines on around the clock from
    the first launch among them until `now` (each billed by its own rule)."""
    fleet = list(instances)
    by_status = {s.value: 0 for s in InstanceStatus}
    by_provider = {p: 0 for p in providers}
    for instance in fleet:
        by_status[instance.status.value] += 1
        by_provider[instance.provider] = by_provider.get(instance.provider, 0) + 1
    launched = [i for i in fleet if i.launched_at is not None]
    period_start = min((i.launched_at for i in launched), default=None)  # type: ignore[type-var]
    total_cost = sum((i.cost_at(now) for i in fleet), Decimal("0")).quantize(COST_QUANTUM)
    always_on = sum(
        (run_cost(i.hourly_usd, i.billing_rule, period_start, now) for i in launched),
        Decimal("0"),
    ).quantize(COST_QUANTUM)
    saving = max(always_on - total_cost, Decimal("0")).quantize(COST_QUANTUM)
    return FleetStats(
        by_status=by_status,
        by_provider=by_provider,
        total=len(fleet),
        live=sum(1 for i in fleet if i.status.is_live),
        burn_rate_per_hour=sum((i.hourly_usd for i in fleet if i.is_billing), Decimal("0")),
        total_cost=total_cost,
        always_on_cost=always_on,
        saving=saving,
        saving_percent=(saving * 100 / always_on).quantize(Decimal("0.1")) if always_on else None,
        period_start=period_start,
    )


# -- figures from aggregates -----------------------------------------------------------


@dataclass(frozen=True)
class FinishedShare:
    """What one finished instance adds to its user's finished totals."""

    instance_id: str
    user_id: str
    status: str
    provider: str
    gpus: int
    hourly_usd: Decimal
    cost: Decimal
    billing_rule: str
    launched_at: datetime | None

    @classmethod
    def of(cls, instance: Instance) -> FinishedShare:
        return cls(
            instance.id, instance.user_id, instance.status.value, instance.provider,
            instance.gpu_count, instance.hourly_usd, instance.accrued_cost,
            instance.billing_rule.name, instance.launched_at,
        )


@dataclass(frozen=True)
class FinishedTotals:
    """The finished instances of a user (or of everyone), as counters kept at each finish."""

    by_status: dict[str, int] = field(default_factory=dict)
    by_provider: dict[str, int] = field(default_factory=dict)
    cost: Decimal = Decimal("0")
    # The sum of the hourly rates of the finished instances that launched, by billing rule.
    hourly_by_rule: dict[str, Decimal] = field(default_factory=dict)
    first_launch: datetime | None = None

    def plus(self, other: FinishedTotals) -> FinishedTotals:
        def added(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}

        firsts = [m for m in (self.first_launch, other.first_launch) if m is not None]
        return FinishedTotals(
            added(self.by_status, other.by_status), added(self.by_provider, other.by_provider),
            self.cost + other.cost, added(self.hourly_by_rule, other.hourly_by_rule),
            min(firsts, default=None),
        )


PER_SECOND = BillingRule("per-second", 1, 0, "")


def from_aggregates(
    finished: FinishedTotals,
    live: Iterable[Instance],
    now: datetime,
    providers: Iterable[str],
    rules: dict[str, BillingRule],
) -> FleetStats:
    """The fleet figures from the finished totals and the live records alone (never the
    history). The always-on cost bills each rule's summed hourly rate from `periodStart`,
    so it may differ from a per-instance sum by rounding (half a micro-dollar a type)."""
    running = list(live)
    by_status = {s.value: 0 for s in InstanceStatus}
    by_provider = {p: 0 for p in providers}
    for status, count in finished.by_status.items():
        by_status[status] = by_status.get(status, 0) + count
    for provider, count in finished.by_provider.items():
        by_provider[provider] = by_provider.get(provider, 0) + count
    hourly_by_rule = dict(finished.hourly_by_rule)
    launches = [finished.first_launch] if finished.first_launch else []
    for instance in running:
        by_status[instance.status.value] += 1
        by_provider[instance.provider] = by_provider.get(instance.provider, 0) + 1
        if instance.launched_at is not None:
            launches.append(instance.launched_at)
            rule = instance.billing_rule
            rules = {**rules, rule.name: rule} if rule.name not in rules else rules
            hourly_by_rule[rule.name] = hourly_by_rule.get(rule.name, Decimal(0)) + (
                instance.hourly_usd
            )
    period_start = min(launches, default=None)
    total_cost = (
        finished.cost + sum((i.cost_at(now) for i in running), Decimal("0"))
    ).quantize(COST_QUANTUM)
    always_on = Decimal("0").quantize(COST_QUANTUM)
    if period_start is not None:
        for name, hourly in hourly_by_rule.items():
            always_on += run_cost(hourly, rules.get(name, PER_SECOND), period_start, now)
    saving = max(always_on - total_cost, Decimal("0")).quantize(COST_QUANTUM)
    return FleetStats(
        by_status=by_status,
        by_provider=by_provider,
        total=sum(by_status.values()),
        live=len(running),
        burn_rate_per_hour=sum((i.hourly_usd for i in running if i.is_billing), Decimal("0")),
        total_cost=total_cost,
        always_on_cost=always_on,
        saving=saving,
        saving_percent=(saving * 100 / always_on).quantize(Decimal("0.1")) if always_on else None,
        period_start=period_start,
    )
