"""The cloud is the source of truth: the faults that used to leak money, one test each, on EC2
(moto) through the API, the workflows and the reaper's tick. Each names the fault it injects
and checks the cost figure it leaves."""

from __future__ import annotations

from datetime import timedelta

import boto3

from chalicelib import bootstrap
from chalicelib.domain.reconcile import plan
from chalicelib.providers.base import DEPLOYMENT_TAG, MANAGED_TAG, RECORD_ID_TAG

REGION = "us-east-1"


def ec2():
    return boto3.client("ec2", region_name=REGION)


def state_of(resource_id: str) -> str:
    [reservation] = ec2().describe_instances(InstanceIds=[resource_id])["Reservations"]
    return reservation["Instances"][0]["State"]["Name"]


def launch_by_hand(aws, tags: dict[str, str]) -> str:
    """A machine started outside the service (a console, a lost record), tagged as given."""
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return ec2().run_instances(
        ImageId=aws.settings.ec2.ami_id, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
        **({"TagSpecifications": spec} if tags else {}),
    )["Instances"][0]["InstanceId"]


def ours(aws, **more: str) -> dict[str, str]:
    return {MANAGED_TAG: "true", DEPLOYMENT_TAG: aws.settings.deployment_name, **more}


def ready_instance(api, aws, **body) -> dict:
    instance = api.provision(**body)
    aws.wait_for_workflows()
    ready = api.get(instance["id"])
    assert ready["status"] == "READY"
    return ready


def terminate_calls(faults) -> int:
    return faults.calls.count(("ec2", "TerminateInstances"))


# -- cloud to records: machines no live record watches ------------------------------------


def test_a_tagged_machine_with_no_record_is_terminated_once_past_the_grace_period(
    api, aws, clock, lifecycle_events
):
    orphan = launch_by_hand(aws, ours(aws))

    clock.advance(seconds=119)
    assert api.tick()["orphansTerminated"] == []  # its launch may still be being recorded
    assert state_of(orphan) == "running"

    clock.advance(seconds=1)
    report = api.tick()

    assert report["orphansTerminated"] == [orphan]
    assert state_of(orphan) == "terminated"
    [event] = [e for e in lifecycle_events() if e["detail-type"] == "Instance Orphan Terminated"]
    assert event["detail"] == {
        "provider": "aws", "region": REGION, "cloudResourceId": orphan, "recordId": None,
        "launchedAt": "2026-03-02T09:00:00.000Z", "ageSeconds": 120,
        "terminatedAt": "2026-03-02T09:02:00.000Z",
    }


def test_untagged_and_foreign_machines_are_never_touched_whatever_else_they_carry(
    api, aws, clock
):
    untagged = launch_by_hand(aws, {})
    foreign = launch_by_hand(aws, {MANAGED_TAG: "true", DEPLOYMENT_TAG: "someone-else"})
    unmanaged = launch_by_hand(aws, {DEPLOYMENT_TAG: aws.settings.deployment_name,
                                     RECORD_ID_TAG: "inst-" + "0" * 32})
    not_true = launch_by_hand(aws, ours(aws, **{MANAGED_TAG: "false"}))

    clock.advance(hours=24)
    report = api.tick()

    assert report["orphansTerminated"] == []
    assert [state_of(m) for m in (untagged, foreign, unmanaged, not_true)] == ["running"] * 4


def test_a_second_machine_of_a_live_record_is_an_orphan_and_its_own_machine_is_kept(
    api, aws, clock
):
    # Two launches raced: the record holds one machine's id; the other carries its tag too.
    instance = ready_instance(api, aws, autoTerminateMinutes=120)
    twin = launch_by_hand(aws, ours(aws, **{RECORD_ID_TAG: instance["id"]}))

    clock.advance(minutes=3)
    report = api.tick()

    assert report["orphansTerminated"] == [twin]
    assert state_of(instance["cloudResourceId"]) == "running"
    assert api.get(instance["id"])["status"] == "READY"


def test_the_machine_of_an_errored_record_whose_release_never_happened_is_found_and_billed(
    api, aws, clock, faults, untracked_machine
):
    # The workflow never runs, the launch reached the cloud without its id being stored, and
    # the release that the stuck record's ERROR asks for is accepted but never carried out.
    faults.answer("stepfunctions", "StartExecution", {"executionArn": "arn:lost", "startDate": 0})
    _, instance, _ = api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})
    machine = untracked_machine(instance["id"])
    faults.answer("ec2", "TerminateInstances", {"TerminatingInstances": [
        {"InstanceId": machine, "CurrentState": {"Code": 32, "Name": "shutting-down"}}
    ]}, times=1)
    clock.advance(minutes=15)
    assert api.tick()["markedStuck"] == [instance["id"]]
    errored = api.get(instance["id"])
    assert (errored["status"], errored["cloudResourceId"]) == ("ERROR", machine)
    assert state_of(machine) == "running"  # the cloud said yes and did nothing

    clock.advance(minutes=3)
    report = api.tick()

    assert report["orphansTerminated"] == [machine]
    assert state_of(machine) == "terminated"
    billed = api.get(instance["id"])
    # From the cloud's launch time to the orphan's terminate: 18 min at 0.526 USD/h.
    assert billed["billing"]["startedAt"] == "2026-03-02T09:00:00.000Z"
    assert billed["billing"]["endedAt"] == "2026-03-02T09:18:00.000Z"
    assert billed["costUsd"] == "0.157800"
    # The finished totals took the new bill too: the stats are the sum of the records.
    assert api.call("GET", "/api/instances/stats")[1]["totalCostUsd"] == "0.157800"


# -- records to cloud: live records whose machine went -------------------------------------


def test_a_machine_terminated_behind_the_services_back_while_running_is_billed_to_then(
    api, aws, clock
):
    instance = ready_instance(api, aws, autoTerminateMinutes=120)
    api.call("POST", f"/api/instances/{instance['id']}/activity", body={"state": "running"})
    clock.advance(minutes=30)
    ec2().terminate_instances(InstanceIds=[instance["cloudResourceId"]])  # in the console
    clock.advance(minutes=1)

    report = api.tick()

    assert report["terminatedOutsideService"] == [instance["id"]]
    gone = api.get(instance["id"])
    assert (gone["status"], gone["statusReason"]) == ("TERMINATED", "terminated_outside_service")
    # Billed to the time EC2 gives for the termination, not to the tick that saw it.
    assert gone["billing"]["endedAt"] == "2026-03-02T09:30:00.000Z"
    assert gone["costUsd"] == "0.263000"


def test_a_record_whose_machine_was_never_listed_is_not_called_gone_within_the_grace_period(
    api, aws, clock, faults
):
    # EC2's reads are eventually consistent: a machine launched a moment ago may not be
    # listed yet. Its record is left alone until the grace period has passed.
    instance = ready_instance(api, aws, autoTerminateMinutes=120)
    ec2().terminate_instances(InstanceIds=[instance["cloudResourceId"]])
    hidden = {"Reservations": []}
    faults.answer("ec2", "DescribeInstances", hidden, times=2)

    clock.advance(seconds=60)
    assert api.tick()["terminatedOutsideService"] == []
    clock.advance(seconds=60)
    assert api.tick()["terminatedOutsideService"] == [instance["id"]]


# -- never abandon a machine -----------------------------------------------------------------


def test_a_stop_the_cloud_accepts_but_never_carries_out_stays_stopping_and_is_sent_again(
    api, aws, clock, faults, lifecycle_events
):
    instance = ready_instance(api, aws)
    machine = instance["cloudResourceId"]
    accepted = {"TerminatingInstances": [
        {"InstanceId": machine, "CurrentState": {"Code": 32, "Name": "shutting-down"}}
    ]}
    faults.answer("ec2", "TerminateInstances", accepted)  # says yes, does nothing
    api.call("DELETE", f"/api/instances/{instance['id']}")
    aws.wait_for_workflows()
    sent_by_release = terminate_calls(faults)

    for _ in range(60):  # an hour of ticks
        clock.advance(minutes=1)
        api.tick()

    stuck = api.get(instance["id"])
    assert stuck["status"] == "STOPPING"  # never ERROR while the machine runs
    assert state_of(machine) == "running"
    resent = terminate_calls(faults) - sent_by_release
    assert 5 <= resent <= 8  # with backoff (30 s, 1, 2, 4, 8, 15, 15 min), not every minute
    # Billed on while the machine runs: the whole hour so far, never frozen at the DELETE.
    assert stuck["billing"]["endedAt"] is None
    assert stuck["costUsd"] == "0.526000"
    stuck_events = [e for e in lifecycle_events() if e["detail-type"] == "Instance Stuck"]
    assert [e["detail"]["id"] for e in stuck_events] == [instance["id"]]  # raised once

    del faults.answers[("ec2", "TerminateInstances")]  # the cloud carries out the next one
    clock.advance(minutes=15)
    api.tick()

    finished = api.get(instance["id"])
    assert finished["status"] == "TERMINATED"
    assert state_of(machine) == "terminated"
    assert finished["billing"]["endedAt"] == "2026-03-02T10:15:00.000Z"
    assert finished["costUsd"] == "0.657500"  # 75 min at 0.526 USD/h


def test_a_tick_six_hours_late_bills_a_deleted_instance_only_to_its_delete(api, aws, clock):
    instance = ready_instance(api, aws)
    clock.advance(hours=1)
    api.call("DELETE", f"/api/instances/{instance['id']}")
    aws.wait_for_workflows()

    clock.advance(hours=6)  # the reaper's schedule stalled
    late = api.get(instance["id"])

    assert late["status"] == "TERMINATED"
    assert late["billing"]["endedAt"] == "2026-03-02T10:00:00.000Z"
    assert late["costUsd"] == "0.526000"  # one hour, not seven


def test_a_delete_whose_release_cannot_start_is_carried_out_by_the_next_tick(
    api, aws, clock, faults
):
    instance = ready_instance(api, aws)
    faults.fail("stepfunctions", "StartExecution", "ServiceUnavailable")
    clock.advance(minutes=10)
    status, stopping, _ = api.call("DELETE", f"/api/instances/{instance['id']}")
    assert (status, stopping["status"]) == (202, "STOPPING")
    assert state_of(instance["cloudResourceId"]) == "running"

    clock.advance(seconds=30)
    api.tick()

    assert api.get(instance["id"])["status"] == "TERMINATED"
    assert api.get(instance["id"])["costUsd"] == "0.092050"  # 630 s, to the tick's terminate


# -- one tick at a time -----------------------------------------------------------------------


def test_a_tick_that_overlaps_another_does_nothing(api, aws, clock, faults):
    launch_by_hand(aws, ours(aws))
    clock.advance(minutes=5)
    leases = bootstrap.container().leases
    assert leases.acquire("reaper-tick", "the-other-tick", clock(), timedelta(seconds=150))

    report = api.tick()

    assert report["skipped"] is True
    assert terminate_calls(faults) == 0
    clock.advance(seconds=151)  # the other tick died holding it: the lease expires
    assert api.tick()["skipped"] is False
    assert terminate_calls(faults) == 1


def test_two_ticks_deciding_on_the_same_records_send_one_terminate_per_machine(
    api, aws, clock, faults
):
    # Even without the lease, the write that claims a terminate is conditional: the tick
    # that loses it sends nothing.
    first, second = (ready_instance(api, aws, autoTerminateMinutes=5) for _ in range(2))
    clock.advance(minutes=6)
    container = bootstrap.container()
    reaper = container.reaper
    records = [container.repository.get(i["id"]) for i in (first, second)]
    look = {("aws", REGION): container.providers.get("aws").snapshot(
        REGION, [r.cloud_resource_id for r in records]
    )}
    decided = plan(records, look, clock(), container.settings.policy)

    one = reaper.reconciler.apply(decided, clock())
    other = reaper.reconciler.apply(decided, clock())

    assert sorted(one.stopped["idle_timeout"]) == sorted([first["id"], second["id"]])
    assert (dict(other.stopped), other.races) == ({}, 2)
    assert terminate_calls(faults) == 1  # one batched call for both machines, once


# -- cost truth on failures ---------------------------------------------------------------------


def test_a_lost_write_after_the_launch_still_bills_the_released_machine(
    api, aws, store_faults
):
    # Every save of the launched machine's id fails: the workflow gives up, releases the
    # machine it finds by its tag, and bills the record from the cloud's launch time.
    def saves_the_launch(params):
        item = params.get("Item", {})
        return "cloud_resource_id" in item and item.get("status", {}).get("S") == "PROVISIONING"

    store_faults.fail("PutItem", "InternalServerError", times=20, when=saves_the_launch)
    instance = api.provision()
    aws.wait_for_workflows()

    failed = api.get(instance["id"])
    assert failed["status"] == "ERROR"
    assert failed["statusReason"] == "internal_error: the service could not store the record"
    assert state_of(failed["cloudResourceId"]) == "terminated"
    assert failed["billing"]["startedAt"] == "2026-03-02T09:00:00.000Z"
    assert failed["costUsd"] == "0.008767"  # EC2's 60-second minimum, not 0.000000


def test_a_transient_dynamodb_error_in_a_step_is_retried_by_the_workflow(
    api, aws, store_faults
):
    def saves_the_launch(params):
        return "cloud_resource_id" in params.get("Item", {})

    store_faults.fail(
        "PutItem", "ProvisionedThroughputExceededException", times=2, when=saves_the_launch
    )
    instance = api.provision()
    aws.wait_for_workflows()

    assert api.get(instance["id"])["status"] == "READY"
    assert len(aws.retry_waits) == 2


def test_the_status_reason_never_carries_the_clouds_own_message(api, aws, faults):
    faults.fail("ec2", "RunInstances", "UnauthorizedOperation")

    instance = api.provision()
    aws.wait_for_workflows()

    failed = api.get(instance["id"])
    assert failed["statusReason"] == (
        "launch_failed: the cloud refused the launch as this deployment configured it "
        "(UnauthorizedOperation)"
    )
    shown = [failed["statusReason"], *(h["reason"] for h in failed["statusHistory"])]
    assert not any("arn:" in (r or "") or "123456789012" in (r or "") for r in shown)


# -- records to cloud: live records whose machine was powered off ------------------------


def test_a_machine_stopped_behind_the_services_back_is_terminated_and_billed_to_its_stop(
    api, aws, clock
):
    """A console stop (or the agent powering off a machine not launched to terminate): EC2
    bills nothing for a stopped instance, which serves no one, so the tick stops the record
    long before its idle deadline, billed to the time EC2 gives for the stop."""
    instance = ready_instance(api, aws, autoTerminateMinutes=120)
    machine = instance["cloudResourceId"]
    clock.advance(minutes=10)
    ec2().stop_instances(InstanceIds=[machine])  # in the console
    assert state_of(machine) == "stopped"
    clock.advance(minutes=1)

    report = api.tick()

    assert report["stoppedPoweredOff"] == [instance["id"]]
    assert report["terminateSent"] == [instance["id"]]
    assert state_of(machine) == "terminated"
    stopped = api.get(instance["id"])
    assert (stopped["status"], stopped["statusReason"]) == (
        "TERMINATED", "powered_off_outside_service")
    assert stopped["billing"]["endedAt"] == "2026-03-02T09:10:00.000Z"
    assert stopped["costUsd"] == "0.087667"  # 600 s at 0.526 USD/h
