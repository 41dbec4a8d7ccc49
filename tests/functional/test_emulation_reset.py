"""The session's one emulation goes back to its start-up state between tests: what a test
made is gone, what the service's deployment consists of stays."""

from __future__ import annotations

import json
import sys

import boto3

from chalicelib.domain.states import InstanceStatus


def test_a_reset_removes_what_a_test_made_and_keeps_the_deployment(api, aws, agents):
    instance = api.provision()
    azure = api.provision(instanceType="Standard_NC4as_T4_v3")
    aws.wait_for_workflows()
    assert api.get(instance["id"])["status"] == InstanceStatus.READY.value
    assert aws.arm_fake.vm_names()

    aws.reset()

    ec2 = boto3.client("ec2", region_name=aws.settings.region)
    assert [r for r in ec2.describe_instances()["Reservations"]] == []
    assert api.call("GET", f"/api/instances/{instance['id']}")[0] == 404
    assert api.call("GET", f"/api/instances/{azure['id']}")[0] == 404
    assert aws.arm_fake.vm_names() == []
    sfn = boto3.client("stepfunctions", region_name=aws.settings.region)
    machines = {m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
    assert {aws.settings.state_machine_arn, aws.settings.release_state_machine_arn} <= machines
    assert sfn.list_executions(stateMachineArn=aws.settings.state_machine_arn)["executions"] == []
    # and the deployment still works (the simulated agents hooked in again, as each test does)
    aws.router.before_step = agents.before_step
    again = api.provision()
    aws.wait_for_workflows()
    assert api.get(again["id"])["status"] == InstanceStatus.READY.value


def test_a_reset_stops_executions_whose_thread_is_still_starting(aws):
    """An execution just started has no environment until its thread makes one; the reset
    waits for it rather than fail (it did, in CI, leaving the next test a stranger's record).
    A tiny switch interval makes the thread lose the processor at once: without the wait the
    first few rounds fail."""
    sfn = boto3.client("stepfunctions", region_name=aws.settings.region)
    machine = aws.settings.release_state_machine_arn
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_ in range(40):
            sfn.start_execution(
                stateMachineArn=machine, name=f"round-{round_}",
                input=json.dumps({"instanceId": "inst-00000000000000000000000000000000"}),
            )
            aws.stop_workflows()
    finally:
        sys.setswitchinterval(interval)
    executions = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert len(executions) == 40
    assert [e["name"] for e in executions if e["status"] == "RUNNING"] == []
