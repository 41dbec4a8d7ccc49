"""Fleet figures for GET /api/instances/stats: counts, burn rate, cost and the saving."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from chalicelib.domain.billing import COST_QUANTUM, run_cost
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
