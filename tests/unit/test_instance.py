"""The instance record: lifecycle moves, what they stamp, what it costs and when it is due."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.domain.catalog import BillingRule
from chalicelib.domain.errors import InvalidTransitionError
from chalicelib.domain.instance import (
    MAX_HISTORY_ENTRIES,
    Instance,
    LifecyclePolicy,
    StatusChange,
)
from chalicelib.domain.states import InstanceStatus

S = InstanceStatus
T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
EC2 = BillingRule("ec2-linux-per-second", increment_seconds=1, minimum_seconds=60, source="x")
AZURE = BillingRule("azure-vm-per-second", increment_seconds=1, minimum_seconds=0, source="x")


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def make_instance(status: InstanceStatus = S.PROVISIONING, **overrides) -> Instance:
    fields = dict(
        id="inst-" + "0" * 32,
        user_id="alice",
        provider="aws",
        region="us-east-1",
        instance_type="g4dn.xlarge",
        gpu_model="T4",
        gpu_count=1,
        hourly_usd=Decimal("0.526"),
        billing_rule=EC2,
        idle_timeout_minutes=30,
        status=status,
        created_at=T0,
        updated_at=T0,
        status_entered_at=T0,
        last_activity_at=T0,
        status_history=(StatusChange(S.PROVISIONING, T0),),
    )
    fields.update(overrides)
    return Instance(**fields)


# -- transition -------------------------------------------------------------------------


def test_a_move_is_appended_to_the_history_with_its_time_and_reason():
    moved = make_instance().transition(S.CONFIGURING, at(minutes=2), reason="launched")
    assert moved.status_history == (
        StatusChange(S.PROVISIONING, T0),
        StatusChange(S.CONFIGURING, at(minutes=2), "launched"),
    )


def test_a_move_updates_status_reason_and_timestamps():
    moved = make_instance().transition(S.CONFIGURING, at(minutes=2), reason="launched")
    assert moved.status is S.CONFIGURING
    assert moved.status_reason == "launched"
    assert moved.status_entered_at == at(minutes=2)
    assert moved.updated_at == at(minutes=2)
    assert moved.created_at == T0


def test_a_move_without_a_reason_clears_the_previous_reason():
    instance = make_instance(S.RUNNING, status_reason="busy")
    assert instance.transition(S.READY, at(minutes=1)).status_reason is None


def test_a_forbidden_move_is_refused_and_the_instance_is_unchanged():
    instance = make_instance(S.PROVISIONING)
    with pytest.raises(InvalidTransitionError):
        instance.transition(S.RUNNING, at(minutes=1))
    assert instance.status is S.PROVISIONING
    assert len(instance.status_history) == 1


def test_extra_changes_are_applied_with_the_move():
    moved = make_instance().transition(
        S.CONFIGURING, at(minutes=1), cloud_resource_id="i-0abc", launched_at=at(seconds=5)
    )
    assert moved.cloud_resource_id == "i-0abc"
    assert moved.launched_at == at(seconds=5)


def test_first_time_ready_stamps_ready_at_and_starts_the_idle_clock():
    moved = make_instance(S.CONFIGURING).transition(S.READY, at(minutes=4))
    assert moved.ready_at == at(minutes=4)
    assert moved.last_activity_at == at(minutes=4)


def test_returning_to_ready_after_running_keeps_the_first_ready_time():
    ready = make_instance(S.CONFIGURING).transition(S.READY, at(minutes=4))
    running = ready.transition(S.RUNNING, at(minutes=10))
    back = running.transition(S.READY, at(minutes=20))
    assert back.ready_at == at(minutes=4)
    assert back.last_activity_at == at(minutes=20)


def test_starting_to_run_counts_as_activity():
    moved = make_instance(S.READY, ready_at=T0).transition(S.RUNNING, at(minutes=7))
    assert moved.last_activity_at == at(minutes=7)
    assert moved.ready_at == T0


@pytest.mark.parametrize(
    ("start", "target"), [(S.READY, S.STOPPING), (S.PROVISIONING, S.CONFIGURING)]
)
def test_moves_outside_service_leave_the_idle_clock_alone(start, target):
    moved = make_instance(start).transition(target, at(minutes=7))
    assert moved.last_activity_at == T0


def test_moves_short_of_the_end_do_not_stamp_termination_or_accrue_cost():
    instance = make_instance(S.READY, launched_at=T0)
    moved = instance.transition(S.STOPPING, at(hours=1))
    assert moved.terminated_at is None
    assert moved.accrued_cost == Decimal("0")
    assert moved.accrued_until is None


def test_termination_stamps_the_time_and_accrues_cost_up_to_the_end_of_billing():
    stopping = make_instance(S.STOPPING, launched_at=T0)
    done = stopping.transition(S.TERMINATED, at(hours=1, minutes=5), billing_ended_at=at(hours=1))
    assert done.terminated_at == at(hours=1, minutes=5)
    assert done.accrued_cost == Decimal("0.526000")
    assert done.accrued_until == at(hours=1)  # accrued up to the end of billing
    assert done.is_billing is False


def test_termination_without_a_billing_end_charges_until_the_moment_of_termination():
    stopping = make_instance(S.STOPPING, launched_at=T0)
    done = stopping.transition(S.TERMINATED, at(seconds=90, milliseconds=200))
    assert done.accrued_cost == Decimal("0.013296")  # 91 s * 0.526 / 3600


def test_an_instance_failing_before_launch_ends_in_error_at_no_cost():
    failed = make_instance(S.PROVISIONING).transition(S.ERROR, at(minutes=3), reason="quota")
    assert failed.terminated_at == at(minutes=3)
    assert failed.accrued_cost == Decimal("0.000000")
    assert failed.accrued_until == at(minutes=3)
    assert failed.status_reason == "quota"


def test_an_instance_failing_after_launch_accrues_what_it_ran():
    failed = make_instance(S.RUNNING, launched_at=T0).transition(S.ERROR, at(minutes=30))
    assert failed.accrued_cost == Decimal("0.263000")  # 1800 s * 0.526 / 3600


def test_history_grows_by_one_entry_per_move_below_the_cap():
    instance = make_instance()
    for minute, target in enumerate([S.CONFIGURING, S.READY, S.RUNNING, S.READY], start=1):
        instance = instance.transition(target, at(minutes=minute))
    assert [c.status for c in instance.status_history] == [
        S.PROVISIONING, S.CONFIGURING, S.READY, S.RUNNING, S.READY,
    ]


def test_history_keeps_only_the_most_recent_fifty_entries():
    assert MAX_HISTORY_ENTRIES == 50
    full = tuple(StatusChange(S.READY, at(seconds=i)) for i in range(MAX_HISTORY_ENTRIES))
    moved = make_instance(S.READY, status_history=full).transition(S.RUNNING, at(hours=1))
    assert len(moved.status_history) == MAX_HISTORY_ENTRIES
    assert moved.status_history[0] == full[1]
    assert moved.status_history[-1] == StatusChange(S.RUNNING, at(hours=1))


def test_a_busy_instance_never_outgrows_the_history_cap():
    instance = make_instance(S.READY)
    for i in range(1, 121):
        instance = instance.transition(S.RUNNING if i % 2 else S.READY, at(minutes=i))
    assert len(instance.status_history) == MAX_HISTORY_ENTRIES
    assert instance.status_history[-1].at == at(minutes=120)


# -- cost -------------------------------------------------------------------------------


def test_an_instance_never_launched_has_cost_nothing():
    assert make_instance(S.PROVISIONING).cost_at(at(hours=3)) == Decimal("0.000000")


def test_a_running_instance_costs_its_billable_time_so_far():
    instance = make_instance(S.RUNNING, launched_at=T0)
    assert instance.cost_at(at(hours=1)) == Decimal("0.526000")
    assert instance.cost_at(at(seconds=30)) == Decimal("0.008767")  # 60 s minimum


def test_cost_stops_growing_once_billing_has_ended():
    instance = make_instance(S.STOPPING, launched_at=T0, billing_ended_at=at(hours=1))
    assert instance.cost_at(at(hours=5)) == Decimal("0.526000")


def test_an_azure_instance_is_billed_for_a_short_run_without_a_minimum():
    instance = make_instance(
        S.RUNNING, provider="azure", instance_type="Standard_NC6",
        hourly_usd=Decimal("0.90"), billing_rule=AZURE, launched_at=T0,
    )
    assert instance.cost_at(at(seconds=30)) == Decimal("0.007500")


def test_an_instance_bills_only_between_launch_and_end_of_billing():
    assert make_instance().is_billing is False
    assert make_instance(launched_at=T0).is_billing is True
    assert make_instance(launched_at=T0, billing_ended_at=at(hours=1)).is_billing is False


# -- idle deadline, due time and stuck detection ------------------------------------------


def test_the_idle_deadline_is_the_last_activity_plus_the_idle_timeout():
    instance = make_instance(S.READY, last_activity_at=at(minutes=10), idle_timeout_minutes=45)
    assert instance.idle_deadline() == at(minutes=55)


def test_reported_activity_pushes_the_idle_deadline_back():
    instance = make_instance(S.RUNNING).with_activity(at(minutes=20))
    assert instance.idle_deadline() == at(minutes=50)
    assert instance.updated_at == at(minutes=20)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (S.PROVISIONING, at(minutes=15)),
        (S.CONFIGURING, at(minutes=15)),
        (S.STOPPING, T0),  # checked on every tick until the cloud confirms it is gone
        (S.READY, at(minutes=35)),
        (S.RUNNING, at(minutes=35)),
        (S.TERMINATED, None),
        (S.ERROR, None),
    ],
)
def test_each_status_is_due_for_the_reaper_at_its_own_time(status, expected):
    instance = make_instance(status, status_entered_at=T0, last_activity_at=at(minutes=5))
    assert instance.due_at(LifecyclePolicy()) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [(S.PROVISIONING, at(minutes=3)), (S.CONFIGURING, at(minutes=7)), (S.STOPPING, T0)],
)
def test_due_time_follows_the_limits_of_the_given_policy(status, expected):
    policy = LifecyclePolicy(
        provisioning_limit=timedelta(minutes=3),
        configuring_limit=timedelta(minutes=7),
        stopping_limit=timedelta(minutes=1),
    )
    assert make_instance(status).due_at(policy) == expected


@pytest.mark.parametrize(
    ("status", "limit"),
    [
        (S.PROVISIONING, timedelta(minutes=15)),
        (S.CONFIGURING, timedelta(minutes=15)),
        (S.STOPPING, timedelta(minutes=10)),
    ],
)
def test_a_transitional_instance_is_stuck_from_the_moment_its_limit_is_reached(status, limit):
    instance = make_instance(status)
    policy = LifecyclePolicy()
    assert instance.is_stuck(T0 + limit - timedelta(microseconds=1), policy) is False
    assert instance.is_stuck(T0 + limit, policy) is True


@pytest.mark.parametrize("status", [S.READY, S.RUNNING, S.TERMINATED, S.ERROR])
def test_an_instance_in_service_or_finished_is_never_stuck(status):
    assert make_instance(status).is_stuck(at(days=30), LifecyclePolicy()) is False


def test_the_stuck_clock_starts_when_the_status_was_entered_not_at_creation():
    instance = make_instance(S.CONFIGURING, status_entered_at=at(minutes=10))
    assert instance.is_stuck(at(minutes=24), LifecyclePolicy()) is False
    assert instance.is_stuck(at(minutes=25), LifecyclePolicy()) is True


def test_the_policy_sets_no_limit_for_in_service_or_finished_states():
    policy = LifecyclePolicy()
    assert [s for s in S if policy.limit_for(s) is None] == [
        S.READY, S.RUNNING, S.TERMINATED, S.ERROR,
    ]


def test_with_cost_accrued_records_the_cost_and_when_it_was_taken():
    accrued = make_instance(S.RUNNING, launched_at=T0).with_cost_accrued(at(hours=2))
    assert (accrued.accrued_cost, accrued.accrued_until) == (Decimal("1.052000"), at(hours=2))
    assert accrued == replace(
        make_instance(S.RUNNING, launched_at=T0),
        accrued_cost=Decimal("1.052000"), accrued_until=at(hours=2), updated_at=at(hours=2),
    )


def test_an_agent_is_silent_after_heartbeats_then_none_for_the_silence_period():
    from chalicelib.domain.agent import Heartbeat

    policy = LifecyclePolicy(agent_silence=timedelta(minutes=3))
    beat = Heartbeat(at=at(minutes=1), gpus=())
    ready = make_instance(S.READY, last_heartbeat=beat)

    assert not ready.agent_is_silent(at(minutes=3, seconds=59), policy)
    assert ready.agent_is_silent(at(minutes=4), policy)
    # Never a word from an agent (none runs there): nothing went silent.
    assert not make_instance(S.READY).agent_is_silent(at(hours=5), policy)
    # Its boot report, then no heartbeat: silent from the report.
    from chalicelib.domain.agent import GpuReport

    booted = make_instance(S.READY, gpu_report=GpuReport(True, (), at(minutes=2)))
    assert not booted.agent_is_silent(at(minutes=4, seconds=59), policy)
    assert booted.agent_is_silent(at(minutes=5), policy)
    # Only in service: a stopping record's machine is being terminated anyway.
    assert not make_instance(S.STOPPING, last_heartbeat=beat).agent_is_silent(at(hours=5), policy)
