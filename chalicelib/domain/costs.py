"""The cost report: what each record billed inside a window [start, end), grouped.

A run is billed from its launch for the seconds its provider's rule charges (the elapsed time
rounded up to the rule's increment, never below its minimum; see billing.py). The report
places those billed seconds on the clock from the launch onwards and counts the ones that
fall inside the window. Money is split so that adjacent windows (and the days of one window)
add up exactly to the record's own cost: the cost of the first `s` billed seconds is
rounded once, and a slice costs the difference between its two ends."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from chalicelib.domain.billing import COST_QUANTUM, billable_seconds, cost_for_seconds
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.instance import MAX_LIFETIME_MINUTES, Instance

GROUP_BYS = ("user", "task", "instanceType", "provider", "day")
MAX_WINDOW = timedelta(days=92)
# A run ends at its lifetime at the latest (plus the minutes a stop takes): a record launched
# longer than this before a window's start can bill inside it only if it is still live or
# ran longer (the store keeps those apart, see persistence/dynamodb.py).
RUN_LOOKBACK = timedelta(minutes=MAX_LIFETIME_MINUTES) + timedelta(days=1)
ZERO = Decimal("0").quantize(COST_QUANTUM)


@dataclass(frozen=True)
class CostGroup:
    key: str | None
    cost: Decimal
    billed_seconds: int
    instances: int


@dataclass(frozen=True)
class CostReport:
    start: datetime
    end: datetime
    group_by: str
    groups: list[CostGroup]
    total: Decimal


def check_window(start: datetime, end: datetime) -> None:
    """ValidationError naming the parameter unless start < end and the window is short."""
    if end <= start:
        raise ValidationError(
            "`to` must be later than `from`.",
            fields=[{"field": "to", "problem": "not after from"}],
        )
    if end - start > MAX_WINDOW:
        raise ValidationError(
            f"The window may span at most {MAX_WINDOW.days} days; ask for several windows.",
            fields=[{"field": "to", "problem": "window too long",
                     "allowed": f"at most {MAX_WINDOW.days} days after from"}],
        )


def billed_span(instance: Instance, now: datetime) -> tuple[datetime, int] | None:
    """Where a record's billed seconds sit: from its launch, this many (up to `now` for a
    run still billing). None if it never started at the cloud."""
    if instance.launched_at is None:
        return None
    end = instance.billing_ended_at or now
    return instance.launched_at, billable_seconds(instance.launched_at, end, instance.billing_rule)


def _billed_before(launched_at: datetime, billed: int, moment: datetime) -> int:
    """How many of the billed seconds lie before `moment`."""
    elapsed = math.ceil((moment - launched_at).total_seconds())
    return min(billed, max(0, elapsed))


@dataclass
class _Slice:
    seconds: int
    cost: Decimal


def slices(
    instance: Instance, start: datetime, end: datetime, now: datetime, by_day: bool = False
) -> list[tuple[datetime, _Slice]]:
    """The record's billed seconds and cost inside [start, end): one slice, or one per UTC
    day (keyed by the day's midnight) when `by_day`. Empty if it billed nothing there."""
    span = billed_span(instance, now)
    if span is None:
        return []
    launched_at, billed = span
    bounds = [start]
    if by_day:
        day = datetime(start.year, start.month, start.day, tzinfo=start.tzinfo)
        day += timedelta(days=1)
        while day < end:
            bounds.append(day)
            day += timedelta(days=1)
    bounds.append(end)
    pieces = []
    for low, high in zip(bounds, bounds[1:], strict=False):
        before_low = _billed_before(launched_at, billed, low)
        before_high = _billed_before(launched_at, billed, high)
        if before_high <= before_low:
            continue
        cost = cost_for_seconds(instance.hourly_usd, before_high) - cost_for_seconds(
            instance.hourly_usd, before_low
        )
        key = datetime(low.year, low.month, low.day, tzinfo=low.tzinfo)
        pieces.append((key, _Slice(before_high - before_low, cost)))
    return pieces


def group_key(instance: Instance, group_by: str) -> str | None:
    if group_by == "user":
        return instance.user_id
    if group_by == "task":
        return instance.task_id
    if group_by == "instanceType":
        return instance.instance_type
    if group_by == "provider":
        return instance.provider
    raise ValueError(f"not a record attribute: {group_by}")


@dataclass
class _Totals:
    cost: Decimal = ZERO
    seconds: int = 0
    instances: set[str] = field(default_factory=set)


def cost_report(
    instances: Iterable[Instance], start: datetime, end: datetime, group_by: str, now: datetime
) -> CostReport:
    """The report of [start, end) over `instances` (any superset of those that billed there:
    the others add nothing). Groups are sorted by key; a record without a task is the group
    with key None, last."""
    check_window(start, end)
    if group_by not in GROUP_BYS:
        raise ValidationError(
            f"groupBy must be one of {', '.join(GROUP_BYS)}.",
            fields=[{"field": "groupBy", "problem": "unknown", "allowed": ", ".join(GROUP_BYS)}],
        )
    by_day = group_by == "day"
    totals: dict[str | None, _Totals] = {}
    seen: set[str] = set()
    for instance in instances:
        if instance.id in seen:
            continue
        seen.add(instance.id)
        for day, piece in slices(instance, start, end, now, by_day=by_day):
            key = day.date().isoformat() if by_day else group_key(instance, group_by)
            group = totals.setdefault(key, _Totals())
            group.cost += piece.cost
            group.seconds += piece.seconds
            group.instances.add(instance.id)
    groups = [
        CostGroup(key, t.cost.quantize(COST_QUANTUM), t.seconds, len(t.instances))
        for key, t in sorted(totals.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    ]
    total = sum((g.cost for g in groups), ZERO).quantize(COST_QUANTUM)
    return CostReport(start, end, group_by, groups, total)
