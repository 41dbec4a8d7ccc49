"""The reconciler's decisions: what one look at the cloud calls for, record by record, and
which machines are orphans. Pure: no cloud, no store, a fixed clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.domain.cloud import CloudMachine, CloudSnapshot, CloudState
from chalicelib.domain.instance import LifecyclePolicy
from chalicelib.domain.reconcile import Action, decide, plan
from chalicelib.domain.states import InstanceStatus
from tests.unit.test_instance import T0, at, make_instance

S = InstanceStatus
POLICY = LifecyclePolicy()
MACHINE = "i-0aaaaaaaaaaaaaaaa"


def launched(status: InstanceStatus, **overrides):
    fields = dict(cloud_resource_id=MACHINE, launched_at=T0, status_entered_at=T0)
    fields.update(overrides)
    return make_instance(status, **fields)


def cloud(*machines: CloudMachine, managed: bool = True) -> CloudSnapshot:
    return CloudSnapshot(
        managed=machines if managed else (), by_id={m.resource_id: m for m in machines}
    )


def running(resource_id: str = MACHINE, record_id: str | None = None, **more) -> CloudMachine:
    return CloudMachine(resource_id, CloudState.RUNNING, record_id, launched_at=T0, **more)


def test_an_in_service_instance_whose_machine_runs_is_left_alone_until_its_idle_deadline():
    ready = launched(S.READY)
    assert decide(ready, cloud(running()), at(minutes=24), POLICY) is None
    warning = decide(ready, cloud(running()), at(minutes=29), POLICY)
    assert (warning.action, warning.reason, warning.at) == (
        Action.WARN_EXPIRY,
        "idle_timeout",
        at(minutes=30),
    )
    decision = decide(ready, cloud(running()), at(minutes=30), POLICY)
    assert (decision.action, decision.reason) == (Action.STOP, "idle_timeout")


@pytest.mark.parametrize("status", [S.PROVISIONING, S.CONFIGURING, S.READY, S.RUNNING])
def test_a_live_record_whose_machine_the_cloud_reports_terminated_is_finished_at_that_time(
    status,
):
    gone = CloudMachine(MACHINE, CloudState.TERMINATED, gone_at=at(minutes=7))

    decision = decide(launched(status), cloud(gone), at(minutes=9), POLICY)

    assert (decision.action, decision.reason) == (Action.FINISH, "terminated_outside_service")
    assert decision.at == at(minutes=7)


def test_a_machine_gone_without_a_time_is_billed_to_the_look_that_found_it_gone():
    decision = decide(launched(S.RUNNING), cloud(), at(minutes=9), POLICY)
    assert (decision.action, decision.at) == (Action.FINISH, at(minutes=9))


def test_a_machine_not_listed_within_the_grace_period_is_not_called_gone():
    assert decide(launched(S.CONFIGURING), cloud(), at(seconds=119), POLICY) is None


def test_nothing_is_called_gone_when_the_cloud_could_not_be_read():
    assert decide(launched(S.READY), None, at(minutes=9), POLICY) is None


def test_a_stopping_record_is_finished_only_once_its_machine_is_gone():
    stopping = launched(S.STOPPING, terminate_requested_at=T0, terminate_attempts=1,
                        billing_ended_at=T0, status_reason="user_request")
    going = CloudMachine(MACHINE, CloudState.TERMINATING)

    assert decide(stopping, cloud(going), at(seconds=10), POLICY) is None
    finished = decide(stopping, cloud(), at(seconds=10), POLICY)
    assert (finished.action, finished.reason, finished.at) == (Action.FINISH, "user_request", T0)


def test_a_stop_whose_machine_still_runs_is_billed_on_and_asked_again_with_backoff():
    stopping = launched(S.STOPPING, terminate_requested_at=T0, terminate_attempts=1,
                        billing_ended_at=T0)

    assert decide(stopping, cloud(running()), at(seconds=20), POLICY) is None  # give it time
    resumed = decide(stopping, cloud(running()), at(seconds=120), POLICY)
    assert resumed.action is Action.RESUME_BILLING
    unbilled = launched(S.STOPPING, terminate_requested_at=T0, terminate_attempts=3)
    assert decide(unbilled, cloud(running()), at(seconds=119), POLICY) is None  # 2 min backoff
    assert decide(unbilled, cloud(running()), at(seconds=120), POLICY).action is (
        Action.SEND_TERMINATE
    )


# -- machines powered off behind the service's back --------------------------------------


@pytest.mark.parametrize("status", [S.READY, S.RUNNING])
def test_an_in_service_record_whose_machine_is_powered_off_is_stopped_at_once(status):
    """Long before its idle deadline: a powered-off machine serves no one."""
    stopped_ec2 = CloudMachine(MACHINE, CloudState.STOPPED, unbilled_since=at(minutes=4))

    decision = decide(launched(status), cloud(stopped_ec2), at(minutes=5), POLICY)

    assert (decision.action, decision.reason) == (Action.STOP, "powered_off_outside_service")
    assert decision.at == at(minutes=4)  # the cloud stopped billing it then
    stopped_azure = CloudMachine(MACHINE, CloudState.STOPPED)  # allocated: billed on
    decision = decide(launched(status), cloud(stopped_azure), at(minutes=5), POLICY)
    assert (decision.action, decision.at) == (Action.STOP, None)


def test_a_starting_record_whose_machine_is_stopped_is_left_to_its_workflow():
    stopped = CloudMachine(MACHINE, CloudState.STOPPED, unbilled_since=at(minutes=4))
    assert decide(launched(S.CONFIGURING), cloud(stopped), at(minutes=5), POLICY) is None


def test_a_stop_whose_stopped_machine_the_cloud_no_longer_bills_does_not_resume_billing():
    stopping = launched(S.STOPPING, terminate_requested_at=T0, terminate_attempts=1,
                        billing_ended_at=T0)
    unbilled = CloudMachine(MACHINE, CloudState.STOPPED, unbilled_since=T0)
    billed = CloudMachine(MACHINE, CloudState.STOPPED)  # an Azure VM stopped, still allocated

    assert decide(stopping, cloud(unbilled), at(minutes=5), POLICY).action is (
        Action.SEND_TERMINATE
    )
    assert decide(stopping, cloud(billed), at(minutes=5), POLICY).action is (
        Action.RESUME_BILLING
    )


def test_a_stopping_records_stopped_machine_is_billed_to_the_stop_the_cloud_gives():
    # A terminate accepted at T0 that did not happen, then the machine stopped at 5 min:
    # billed on to the stop, not to T0.
    ran_on = launched(S.STOPPING, terminate_requested_at=T0, terminate_attempts=1,
                      billing_ended_at=T0)
    stopped = CloudMachine(MACHINE, CloudState.STOPPED, unbilled_since=at(minutes=5))
    decision = decide(ran_on, cloud(stopped), at(minutes=6), POLICY)
    assert (decision.action, decision.at) == (Action.END_BILLING, at(minutes=5))
    # No terminate taken yet, the machine stopped at 2 min: billing ends there.
    asked = launched(S.STOPPING, terminate_requested_at=at(minutes=3), terminate_attempts=1)
    stopped = CloudMachine(MACHINE, CloudState.STOPPED, unbilled_since=at(minutes=2))
    decision = decide(asked, cloud(stopped), at(minutes=3, seconds=10), POLICY)
    assert (decision.action, decision.at) == (Action.END_BILLING, at(minutes=2))


def test_a_stop_past_its_limit_is_reported_stuck_once_and_never_abandoned():
    stopping = launched(S.STOPPING, terminate_requested_at=at(minutes=11),
                        terminate_attempts=6)
    first = decide(stopping, cloud(running()), at(minutes=11, seconds=1), POLICY)
    assert first.action is Action.REPORT_STUCK
    reported = launched(S.STOPPING, terminate_requested_at=at(minutes=11),
                        terminate_attempts=6, stuck_reported_at=at(minutes=11))
    assert decide(reported, cloud(running()), at(minutes=11, seconds=1), POLICY) is None


def test_a_stopping_record_without_a_machine_id_is_finished_unless_its_tag_finds_one():
    stopping = make_instance(S.STOPPING)
    assert decide(stopping, cloud(), at(seconds=1), POLICY).action is Action.FINISH
    tagged = running(record_id=stopping.id)
    decision = decide(stopping, cloud(tagged), at(seconds=1), POLICY)
    assert (decision.action, decision.machine) == (Action.SEND_TERMINATE, tagged)


def test_orphans_are_managed_machines_no_live_record_owns_past_the_grace_period():
    owned = launched(S.READY, idle_timeout_minutes=120)
    launching = make_instance(S.PROVISIONING, id="inst-" + "1" * 32)
    look = cloud(
        running(MACHINE, owned.id),
        running("i-0bbbbbbbbbbbbbbbb", launching.id),  # its launch id not written yet
        running("i-0ccccccccccccccccc", "inst-" + "2" * 32),  # a finished or lost record
        running("i-0dddddddddddddddd", None),  # no record tag at all
        running("i-0eeeeeeeeeeeeeeee", None),
        CloudMachine("i-0fffffffffffffffff", CloudState.TERMINATING, launched_at=T0),
    )
    young = CloudMachine("i-0999999999999999a", CloudState.RUNNING, launched_at=at(minutes=4))
    look = CloudSnapshot(managed=(*look.managed, young), by_id=look.by_id)

    decided = plan([owned, launching], {("aws", "us-east-1"): look}, at(minutes=5), POLICY)

    assert sorted(o.machine.resource_id for o in decided.orphans) == [
        "i-0ccccccccccccccccc", "i-0dddddddddddddddd", "i-0eeeeeeeeeeeeeeee",
    ]
    assert all(o.age == timedelta(minutes=5) for o in decided.orphans)
    assert decided.young_unowned == 1


def test_a_spent_budget_stops_a_live_instance_but_keeps_a_plans_own_stop_or_finish():
    from dataclasses import replace

    from chalicelib.domain.reconcile import with_budget_stops

    quiet = launched(S.READY)
    warned = replace(launched(S.READY, cloud_resource_id="i-0bbbbbbbbbbbbbbbb"), id="inst-b")
    gone = replace(launched(S.READY, cloud_resource_id="i-0ccccccccccccccccc"), id="inst-c")
    snapshots = {("aws", quiet.region): cloud(running(), running("i-0bbbbbbbbbbbbbbbb"))}
    now = at(minutes=29)  # the idle warnings are due, not the stops
    decided = plan([quiet, warned, gone], snapshots, now, POLICY)

    budgeted = with_budget_stops(decided, [quiet, warned, gone], snapshots)

    by_id = {d.instance.id: d for d in budgeted.decisions}
    assert (by_id[quiet.id].action, by_id[quiet.id].reason) == (Action.STOP, "budget_exhausted")
    assert by_id[quiet.id].machine is not None
    assert (by_id["inst-b"].action, by_id["inst-b"].reason) == (Action.STOP, "budget_exhausted")
    assert by_id["inst-c"].action is Action.FINISH  # its machine is gone: finished, not stopped
