"""The lifecycle workflow (the ASL document, run by moto's interpreter) end to end."""

from __future__ import annotations

import boto3

from chalicelib import bootstrap
from chalicelib.providers.aws_ec2 import RECORD_ID_TAG


def ec2_instances_for(record_id: str) -> list[dict]:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    reservations = ec2.describe_instances(
        Filters=[{"Name": f"tag:{RECORD_ID_TAG}", "Values": [record_id]}]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def use_client_hook(hook, event: str = "before-parameter-build") -> None:
    """Run `hook` before every AWS call the service makes (a botocore event handler)."""
    container = bootstrap.container()
    build = container._aws_client

    def client(service, region):
        created = build(service, region)
        created.meta.events.register_first(event, hook)
        return created

    container._aws_client = client


def test_provisioned_instance_reaches_ready_through_configuring(api, aws):
    instance = api.provision(taskId="task-42")
    assert instance["status"] == "PROVISIONING"

    aws.wait_for_workflows()

    ready = api.get(instance["id"])
    assert ready["status"] == "READY"
    assert [h["status"] for h in ready["statusHistory"]] == [
        "PROVISIONING", "CONFIGURING", "READY",
    ]
    assert ready["cloudResourceId"].startswith("i-")
    assert ready["privateIp"]
    assert ready["readyAt"] is not None
    assert aws.execution_status(ready["executionId"]) == "SUCCEEDED"
    [machine] = ec2_instances_for(instance["id"])
    assert machine["InstanceId"] == ready["cloudResourceId"]
    assert machine["InstanceType"] == "g4dn.xlarge"
    tags = {t["Key"]: t["Value"] for t in machine["Tags"]}
    assert tags["provisioner:user-id"] == "alice"
    assert tags["provisioner:task-id"] == "task-42"


def test_workflow_execution_is_named_after_the_instance(api, aws):
    instance = api.provision()
    aws.wait_for_workflows()
    assert api.get(instance["id"])["executionId"].endswith(f":{instance['id']}")


def test_capacity_error_at_launch_ends_in_error_with_the_cloud_code(api, aws, faults):
    faults.fail("ec2", "RunInstances", "InsufficientInstanceCapacity")

    instance = api.provision()
    aws.wait_for_workflows()

    failed = api.get(instance["id"])
    assert failed["status"] == "ERROR"
    assert failed["statusReason"] == (
        "launch_failed: the cloud refused the launch (InsufficientInstanceCapacity)"
    )
    assert failed["costUsd"] == "0.000000"
    assert ec2_instances_for(instance["id"]) == []
    assert aws.execution_status(failed["executionId"]) == "FAILED"


def test_throttled_launch_is_retried_with_backoff_and_reaches_ready(api, aws, faults):
    faults.fail("ec2", "RunInstances", "RequestLimitExceeded", times=2)

    instance = api.provision()
    aws.wait_for_workflows()

    assert api.get(instance["id"])["status"] == "READY"
    assert len(aws.retry_waits) == 2  # the ASL's Retry waited twice before the third try
    assert len(ec2_instances_for(instance["id"])) == 1


def test_throttling_that_never_ends_gives_up_in_error(api, aws, faults):
    faults.fail("ec2", "RunInstances", "RequestLimitExceeded", times=50)

    instance = api.provision()
    aws.wait_for_workflows()

    failed = api.get(instance["id"])
    assert failed["status"] == "ERROR"
    assert failed["statusReason"] == (
        "launch_failed: the cloud kept throttling the service (RequestLimitExceeded)"
    )


def test_machine_terminated_behind_our_back_while_starting_is_recorded_as_error(api, aws):
    ec2 = boto3.client("ec2", region_name="us-east-1")

    def terminate_out_of_band(params, model, **_):
        if model.name == "DescribeInstances" and params.get("InstanceIds"):
            ec2.terminate_instances(InstanceIds=params["InstanceIds"])

    use_client_hook(terminate_out_of_band)
    instance = api.provision()
    aws.wait_for_workflows()

    failed = api.get(instance["id"])
    assert failed["status"] == "ERROR"
    assert failed["statusReason"] == "launch_failed: the machine failed while it started"
    assert failed["billing"]["startedAt"] is not None  # it ran, however briefly: billed
    assert failed["costUsd"] == "0.008767"  # EC2's 60-second minimum


def test_instance_stopped_during_launch_ends_the_workflow_quietly_and_leaves_no_machine(
    api, aws, faults
):
    state: dict = {}

    def stop_first(model, **_):
        if model.name == "RunInstances" and "stopped" not in state:
            state["stopped"] = api.call("DELETE", f"/api/instances/{state['id']}")[0]

    use_client_hook(stop_first)

    status, instance, _ = api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})
    state["id"] = instance["id"]
    aws.wait_for_workflows()

    assert state["stopped"] == 202
    stopped = api.get(instance["id"])
    assert aws.execution_status(stopped["executionId"]) == "SUCCEEDED"
    [machine] = ec2_instances_for(instance["id"])
    assert machine["State"]["Name"] in ("shutting-down", "terminated")
    # The launch lost the race, released its machine and billed the record for it.
    assert stopped["cloudResourceId"] == machine["InstanceId"]
    assert stopped["costUsd"] == "0.008767"

    api.tick()
    assert api.get(instance["id"])["status"] == "TERMINATED"


def test_lifecycle_events_are_put_on_the_bus(api, aws, lifecycle_events):
    instance = api.provision()
    aws.wait_for_workflows()
    api.call("DELETE", f"/api/instances/{instance['id']}")
    api.tick()

    events = [e for e in lifecycle_events() if e["detail"]["id"] == instance["id"]]
    assert [e["detail-type"] for e in events] == [
        "Instance Provisioning", "Instance Ready", "Instance Terminated",
    ]
    assert {e["source"] for e in events} == {"instance-provisioner"}
    assert events[-1]["detail"]["status"] == "TERMINATED"


def test_an_event_the_bus_refuses_is_logged_and_the_lifecycle_goes_on(api, aws, faults, caplog):
    # EventBridge reports a refused entry in its answer, not as an error.
    faults.answer("events", "PutEvents", {"FailedEntryCount": 1, "Entries": [
        {"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}
    ]})
    instance = api.provision()
    aws.wait_for_workflows()

    assert api.get(instance["id"])["status"] == "READY"
    assert "Instance Provisioning refused by" in caplog.text
    assert "InternalFailure" in caplog.text
    assert "could not publish 1 event(s)" in caplog.text


def test_failed_launch_announces_an_error_event(api, aws, faults, lifecycle_events):
    faults.fail("ec2", "RunInstances", "VcpuLimitExceeded")
    instance = api.provision()
    aws.wait_for_workflows()

    types = [e["detail-type"] for e in lifecycle_events() if e["detail"]["id"] == instance["id"]]
    assert types == ["Instance Provisioning", "Instance Error"]


def test_workflow_that_cannot_start_answers_503_and_records_the_failure(api, aws, faults):
    faults.fail("stepfunctions", "StartExecution", "ServiceUnavailable")

    status, body, _ = api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})

    assert status == 503
    assert body["error"] == "workflow_unavailable"
    _, listing, _ = api.call("GET", "/api/instances")
    [record] = listing["items"]
    assert record["status"] == "ERROR"
    assert record["statusReason"] == "workflow_start_failed"
    assert ec2_instances_for(record["id"]) == []


def test_a_deployment_without_its_state_machine_refuses_to_provision_and_writes_nothing(
    api, aws, clock
):
    from dataclasses import replace

    from chalicelib.bootstrap import Container

    bootstrap.use(Container(settings=replace(aws.settings, state_machine_arn=None), clock=clock))

    status, body, _ = api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})

    assert (status, body["error"]) == (503, "not_configured")
    assert "LIFECYCLE_STATE_MACHINE_ARN" in body["message"]
    assert api.call("GET", "/api/instances")[1]["items"] == []


def test_a_workflow_failing_after_ready_leaves_the_healthy_instance_in_service(api, aws):
    import app

    instance = api.provision()
    aws.wait_for_workflows()

    # As if MarkReady's Lambda timed out after writing READY and Catch ran RecordError.
    app.record_instance_error(
        {"instanceId": instance["id"], "error": {"Error": "Sandbox.Timedout", "Cause": ""}}, None
    )

    assert api.get(instance["id"])["status"] == "READY"
    [machine] = ec2_instances_for(instance["id"])
    assert machine["State"]["Name"] == "running"


def test_a_launch_retried_after_its_record_finished_releases_the_machine_it_made(
    api, aws, faults, untracked_machine
):
    import app

    faults.answer("stepfunctions", "StartExecution", {"executionArn": "arn:lost", "startDate": 0})
    _, instance, _ = api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})
    api.call("DELETE", f"/api/instances/{instance['id']}")
    api.tick()  # no machine yet: the stop is confirmed at once
    assert api.get(instance["id"])["status"] == "TERMINATED"
    late = untracked_machine(instance["id"])  # the first launch's, landing after all that

    result = app.launch_instance({"instanceId": instance["id"]}, None)  # the Retry

    assert result["stopped"] is True
    [machine] = ec2_instances_for(instance["id"])
    assert (machine["InstanceId"], machine["State"]["Name"]) == (late, "terminated")
