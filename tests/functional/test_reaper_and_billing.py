"""The scheduled `reaper` tick and the money: idle termination, confirmation, stuck records."""

from __future__ import annotations

import boto3


def ready_instance(api, aws, **body) -> dict:
    instance = api.provision(**body)
    aws.wait_for_workflows()
    ready = api.get(instance["id"])
    assert ready["status"] == "READY"
    return ready


def ec2_state(resource_id: str) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    [reservation] = ec2.describe_instances(InstanceIds=[resource_id])["Reservations"]
    return reservation["Instances"][0]["State"]["Name"]


def test_idle_instance_is_terminated_after_its_timeout(api, aws, clock):
    instance = ready_instance(api, aws, autoTerminateMinutes=5)

    clock.advance(minutes=4, seconds=59)
    api.tick()
    assert api.get(instance["id"])["status"] == "READY"

    clock.advance(seconds=1)
    report = api.tick()

    # The same tick asks the cloud to terminate it and then confirms the cloud did.
    assert report["terminatedIdle"] == [instance["id"]]
    assert report["confirmedTerminated"] == [instance["id"]]
    terminated = api.get(instance["id"])
    assert terminated["status"] == "TERMINATED"
    assert terminated["statusReason"] == "idle_timeout"
    assert [h["status"] for h in terminated["statusHistory"]][-2:] == ["STOPPING", "TERMINATED"]
    assert ec2_state(terminated["cloudResourceId"]) == "terminated"


def test_reported_activity_restarts_the_idle_clock(api, aws, clock):
    instance = ready_instance(api, aws, autoTerminateMinutes=5)

    clock.advance(minutes=4)
    status, running, _ = api.call(
        "POST", f"/api/instances/{instance['id']}/activity", body={"state": "running"}
    )
    assert (status, running["status"]) == (200, "RUNNING")
    clock.advance(minutes=4)
    api.tick()
    assert api.get(instance["id"])["status"] == "RUNNING"

    status, idle, _ = api.call(
        "POST", f"/api/instances/{instance['id']}/activity", body={"state": "idle"}
    )
    assert (status, idle["status"]) == (200, "READY")
    clock.advance(minutes=5)
    api.tick()
    assert api.get(instance["id"])["statusReason"] == "idle_timeout"


def test_running_task_without_heartbeat_counts_as_idle(api, aws, clock):
    instance = ready_instance(api, aws, autoTerminateMinutes=10)
    api.call("POST", f"/api/instances/{instance['id']}/activity", body={"state": "running"})

    clock.advance(minutes=10)
    api.tick()

    assert api.get(instance["id"])["statusReason"] == "idle_timeout"


def test_delete_terminates_the_machine_at_once_without_a_tick_and_bills_to_the_delete(
    api, aws, clock
):
    instance = ready_instance(api, aws)
    clock.advance(minutes=12, seconds=30)

    status, stopping, _ = api.call("DELETE", f"/api/instances/{instance['id']}")
    assert (status, stopping["status"]) == (202, "STOPPING")
    aws.wait_for_workflows()  # the release workflow the DELETE started; no reaper tick runs

    terminated = api.get(instance["id"])
    assert terminated["status"] == "TERMINATED"
    assert terminated["statusReason"] == "user_request"
    assert ec2_state(instance["cloudResourceId"]) == "terminated"
    # g4dn.xlarge: 0.526 USD/h x 750 s (until EC2 accepted the termination, at the DELETE)
    assert terminated["costUsd"] == "0.109583"
    assert terminated["billing"]["endedAt"] == "2026-03-02T09:12:30.000Z"
    clock.advance(hours=3)
    assert api.get(instance["id"])["costUsd"] == "0.109583"  # a finished run costs no more


def test_short_run_is_billed_the_sixty_second_minimum(api, aws, clock):
    instance = ready_instance(api, aws)
    clock.advance(seconds=10)
    api.call("DELETE", f"/api/instances/{instance['id']}")
    aws.wait_for_workflows()

    # 0.526 x 60 / 3600 = 0.008766666 -> 0.008767
    assert api.get(instance["id"])["costUsd"] == "0.008767"


def test_repeated_delete_is_harmless(api, aws):
    instance = ready_instance(api, aws)
    first = api.call("DELETE", f"/api/instances/{instance['id']}")
    second = api.call("DELETE", f"/api/instances/{instance['id']}")
    aws.wait_for_workflows()
    third = api.call("DELETE", f"/api/instances/{instance['id']}")

    assert [first[0], second[0], third[0]] == [202, 202, 202]
    assert second[1]["status"] in ("STOPPING", "TERMINATED")
    assert third[1]["status"] == "TERMINATED"
    assert len(third[1]["statusHistory"]) == 5


def test_ticks_that_change_nothing_write_nothing_and_a_missed_tick_changes_no_figure(
    api, aws, clock, dynamodb_calls
):
    every_minute = ready_instance(api, aws, autoTerminateMinutes=60)
    once = ready_instance(api, aws, autoTerminateMinutes=60)

    dynamodb_calls.clear()
    for _ in range(30):
        clock.advance(minutes=1)
        api.tick()
    every = api.get(every_minute["id"])
    single = api.get(once["id"])

    # Both were READY at the same instant; the cost follows from the timestamps alone.
    assert every["costUsd"] == single["costUsd"] == "0.263000"  # 0.526 x 1800 s
    writes = [c for c in dynamodb_calls if c in ("PutItem", "UpdateItem", "BatchWriteItem")]
    assert writes == []  # the ticks' lease lives in the control table, not on the records


def test_cost_on_read_is_live_between_ticks(api, aws, clock):
    instance = ready_instance(api, aws)
    clock.advance(hours=2)
    assert api.get(instance["id"])["costUsd"] == "1.052000"


def test_instance_stuck_in_provisioning_is_flagged_and_released(api, aws, clock, faults):
    # Step Functions accepts the execution but it never runs (as if lost): the record
    # stays PROVISIONING until the reaper notices.
    faults.answer(
        "stepfunctions", "StartExecution",
        {"executionArn": "arn:aws:states:us-east-1:123456789012:execution:lost:x",
         "startDate": 0},
    )
    status, instance, _ = api.call("POST", "/api/instances", body={"instanceType": "p3.2xlarge"})
    assert status == 202

    clock.advance(minutes=14)
    api.tick()
    assert api.get(instance["id"])["status"] == "PROVISIONING"

    clock.advance(minutes=1)
    report = api.tick()
    flagged = api.get(instance["id"])
    assert report["markedStuck"] == [instance["id"]]
    assert flagged["status"] == "ERROR"
    assert flagged["statusReason"] == "stuck_in_provisioning"


def test_stats_report_counts_burn_rate_cost_and_saving(api, aws, clock):
    kept = ready_instance(api, aws, autoTerminateMinutes=120)  # g4dn.xlarge, 0.526/h
    stopped = ready_instance(api, aws, instanceType="p3.2xlarge")  # 3.06/h
    clock.advance(hours=1)
    api.call("DELETE", f"/api/instances/{stopped['id']}")
    api.tick()
    clock.advance(hours=1)

    status, stats, _ = api.call("GET", "/api/instances/stats")

    assert status == 200
    assert stats["byStatus"]["READY"] == 1
    assert stats["byStatus"]["TERMINATED"] == 1
    assert stats["byProvider"] == {"aws": 2, "azure": 0}
    assert stats["live"] == 1
    assert stats["burnRateUsdPerHour"] == "0.526"
    # kept ran 2 h (1.052), stopped ran 1 h (3.06): 4.112 spent
    assert stats["totalCostUsd"] == "4.112000"
    # around the clock for the same 2 h: (0.526 + 3.06) x 2 = 7.172; saving 3.06
    assert stats["alwaysOnCostUsd"] == "7.172000"
    assert stats["savingUsd"] == "3.060000"
    assert kept["id"] != stopped["id"]


def test_a_stop_the_cloud_throttles_is_sent_again_by_the_next_tick(api, aws, clock, faults):
    instance = ready_instance(api, aws)
    faults.fail("ec2", "TerminateInstances", "RequestLimitExceeded")
    clock.advance(minutes=2)
    api.call("DELETE", f"/api/instances/{instance['id']}")
    aws.wait_for_workflows()

    throttled = api.get(instance["id"])
    assert throttled["status"] == "STOPPING"
    assert throttled["billing"]["endedAt"] is None  # the cloud has not accepted it yet
    assert ec2_state(instance["cloudResourceId"]) == "running"

    clock.advance(minutes=1)
    report = api.tick()

    assert report["terminateSent"] == [instance["id"]]
    terminated = api.get(instance["id"])
    assert terminated["status"] == "TERMINATED"
    assert ec2_state(instance["cloudResourceId"]) == "terminated"
    assert terminated["costUsd"] == "0.026300"  # billed until the cloud accepted: 180 s


def test_a_machine_whose_launch_raced_the_stop_is_found_by_its_tag_and_terminated(
    api, aws, faults, untracked_machine
):
    # The workflow never runs (as if its Launch died after RunInstances but before saving),
    # and the user stops the instance; the machine exists only under the record's tag.
    faults.answer("stepfunctions", "StartExecution", {"executionArn": "arn:lost", "startDate": 0})
    _, instance, _ = api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})
    orphan = untracked_machine(instance["id"])
    api.call("DELETE", f"/api/instances/{instance['id']}")

    api.tick()

    assert ec2_state(orphan) == "terminated"
    stopped = api.get(instance["id"])
    assert stopped["status"] == "TERMINATED"
    assert stopped["cloudResourceId"] == orphan
