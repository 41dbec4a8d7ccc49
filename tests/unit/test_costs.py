"""The cost report's arithmetic: billed seconds inside a window under each provider's rule,
instances straddling windows and days, and money that adds up to the records' own costs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.domain.catalog import BillingRule
from chalicelib.domain.costs import cost_report, slices
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.instance import Instance
from chalicelib.domain.states import InstanceStatus

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
EC2 = BillingRule("ec2-linux-per-second", increment_seconds=1, minimum_seconds=60, source="x")
PER_MINUTE = BillingRule("per-minute", increment_seconds=60, minimum_seconds=0, source="x")


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def record(
    name: str, launched: datetime | None, ended: datetime | None, rule: BillingRule = EC2,
    hourly: str = "0.526", user: str = "alice", task: str | None = None,
    provider: str = "aws", instance_type: str = "g4dn.xlarge",
) -> Instance:
    status = InstanceStatus.TERMINATED if ended else InstanceStatus.READY
    return Instance(
        id=name, user_id=user, task_id=task, provider=provider, region="us-east-1",
        instance_type=instance_type, gpu_model="T4", gpu_count=1, hourly_usd=Decimal(hourly),
        billing_rule=rule, idle_timeout_minutes=30, status=status, created_at=T0,
        updated_at=T0, status_entered_at=T0, last_activity_at=T0, launched_at=launched,
        billing_ended_at=ended,
    )


def test_an_instance_straddling_the_window_counts_only_its_part():
    run = record("a", launched=at(hours=-1), ended=at(hours=1))

    report = cost_report([run], T0, at(hours=2), "user", now=at(hours=3))

    [group] = report.groups
    assert (group.key, group.billed_seconds, group.instances) == ("alice", 3600, 1)
    assert group.cost == Decimal("0.526000")


def test_a_window_that_covers_the_runs_totals_the_records_own_costs():
    now = at(hours=30)
    runs = [
        record("a", at(seconds=-3), at(minutes=17, seconds=41)),
        record("b", at(hours=2), at(hours=2, seconds=20)),  # below EC2's minimum
        record("c", at(hours=5), at(hours=29, seconds=7), rule=PER_MINUTE, hourly="3.06"),
        record("d", at(hours=6), None, hourly="7.2"),  # still billing
        record("e", None, None),  # never launched
    ]

    for group_by in ("user", "task", "instanceType", "provider", "day"):
        report = cost_report(runs, at(days=-1), at(days=2), group_by, now)
        assert report.total == sum((r.cost_at(now) for r in runs), Decimal(0)), group_by


def test_adjacent_windows_add_up_to_the_whole_to_the_micro_dollar():
    run = record("a", at(seconds=0.4), at(hours=7, seconds=13.7), hourly="0.333333")
    now = at(hours=8)

    halves = [
        cost_report([run], at(hours=-1), at(hours=3, seconds=0.5), "user", now).total,
        cost_report([run], at(hours=3, seconds=0.5), at(hours=9), "user", now).total,
    ]

    assert sum(halves) == run.cost_at(now)


def test_the_minimum_charge_is_placed_after_the_launch():
    short = record("a", launched=T0, ended=at(seconds=20))  # billed 60 s from 09:00:00

    inside = cost_report([short], at(seconds=30), at(hours=1), "user", at(hours=2))

    assert inside.groups[0].billed_seconds == 30


def test_per_minute_rounding_follows_the_rule():
    run = record("a", T0, at(seconds=61), rule=PER_MINUTE)

    report = cost_report([run], at(hours=-1), at(hours=1), "user", at(hours=2))

    assert report.groups[0].billed_seconds == 120


def test_day_groups_split_an_instance_across_utc_days():
    run = record("a", datetime(2026, 3, 2, 22, 0, tzinfo=UTC), datetime(2026, 3, 3, 1, 0,
                                                                         tzinfo=UTC))

    report = cost_report([run], datetime(2026, 3, 1, tzinfo=UTC),
                         datetime(2026, 3, 5, tzinfo=UTC), "day", at(days=3))

    assert [(g.key, g.billed_seconds, g.instances) for g in report.groups] == [
        ("2026-03-02", 7200, 1), ("2026-03-03", 3600, 1),
    ]
    assert report.total == run.cost_at(at(days=3))


def test_groups_by_task_put_records_without_a_task_last():
    runs = [record("a", T0, at(hours=1), task="t-2"), record("b", T0, at(hours=1)),
            record("c", T0, at(hours=1), task="t-1")]

    report = cost_report(runs, T0, at(hours=2), "task", at(hours=3))

    assert [g.key for g in report.groups] == ["t-1", "t-2", None]


def test_a_live_instance_is_counted_to_now_and_a_run_outside_the_window_not_at_all():
    live = record("a", T0, None)
    earlier = record("b", at(days=-3), at(days=-2))

    report = cost_report([live, earlier], T0, at(days=1), "user", now=at(minutes=30))

    assert [(g.billed_seconds, g.instances) for g in report.groups] == [(1800, 1)]
    assert slices(earlier, T0, at(days=1), at(minutes=30)) == []


@pytest.mark.parametrize(
    ("start", "end", "problem"),
    [(T0, T0, "not after from"), (T0, at(days=93), "window too long")],
)
def test_an_empty_or_too_long_window_is_refused_naming_to(start, end, problem):
    with pytest.raises(ValidationError) as refused:
        cost_report([], start, end, "user", T0)
    assert refused.value.fields[0]["field"] == "to"
    assert refused.value.fields[0]["problem"] == problem
