"""Azure instances end to end: the API, the lifecycle workflow (moto running the ASL) and the
reaper, with the real Azure SDK talking to the local Resource Manager."""

from __future__ import annotations

from dataclasses import replace

import boto3

from chalicelib import bootstrap
from chalicelib.bootstrap import Container
from chalicelib.settings import AzureSettings


def provision_azure(api, **body) -> dict:
    instance = api.provision(instanceType="Standard_NC4as_T4_v3", **body)
    assert (instance["provider"], instance["region"]) == ("azure", "eastus")
    return instance


def vm_puts(aws) -> list[str]:
    return [c for c in aws.arm_fake.calls if c.startswith("PUT virtualMachines")]


def test_an_azure_instance_reaches_ready_through_configuring(api, aws):
    instance = provision_azure(api, taskId="scan-0042")

    aws.wait_for_workflows()

    ready = api.get(instance["id"])
    assert ready["status"] == "READY"
    assert [h["status"] for h in ready["statusHistory"]] == [
        "PROVISIONING", "CONFIGURING", "READY",
    ]
    assert ready["cloudResourceId"].endswith(
        f"/resourceGroups/provisioner-local/providers/Microsoft.Compute/virtualMachines/"
        f"{instance['id']}"
    )
    assert ready["privateIp"] == "10.0.0.4"
    assert ready["billing"]["rule"] == "azure-vm-per-second"
    assert aws.execution_status(ready["executionId"]) == "SUCCEEDED"
    vm = aws.arm_fake.vm_model(instance["id"])
    assert vm["properties"]["hardwareProfile"]["vmSize"] == "Standard_NC4as_T4_v3"
    assert vm["tags"]["provisioner:user-id"] == "alice"
    assert vm["tags"]["provisioner:task-id"] == "scan-0042"


def test_provider_azure_can_be_asked_for_by_name(api, aws):
    instance = api.provision(instanceType="Standard_NV36ads_A10_v5", provider="azure")

    aws.wait_for_workflows()

    assert api.get(instance["id"])["status"] == "READY"


def test_arm_throttling_is_retried_by_the_sdk_and_the_launch_goes_on(api, aws):
    aws.arm_fake.fail_next("PUT", "virtualMachines", 429, "SubscriptionRequestsThrottled",
                           retry_after=1)

    instance = provision_azure(api)
    aws.wait_for_workflows()

    assert api.get(instance["id"])["status"] == "READY"
    assert aws.azure_waits == [1]  # azure-core honoured Retry-After (recorded, not slept)
    assert aws.retry_waits == []  # the workflow never saw the throttling
    assert len(vm_puts(aws)) == 2
    assert aws.arm_fake.vm_names() == [instance["id"]]


def test_throttling_beyond_the_sdk_retries_is_retried_by_the_workflow_without_a_second_vm(
    api, aws
):
    aws.arm_fake.fail_next("PUT", "virtualMachines", 429, "SubscriptionRequestsThrottled",
                           retry_after=1, times=4)

    instance = provision_azure(api)
    aws.wait_for_workflows()

    assert api.get(instance["id"])["status"] == "READY"
    assert len(aws.retry_waits) == 1  # the ASL's Retry ran Launch once more
    assert aws.arm_fake.vm_names() == [instance["id"]]
    assert aws.arm_fake.nic_names() == [f"{instance['id']}-nic"]


def test_an_allocation_failure_ends_in_error_with_the_azure_code_and_message(api, aws):
    aws.arm_fake.fail_next_provisioning(
        "AllocationFailed",
        "Allocation failed. We do not have sufficient capacity for the requested VM size "
        "in this region.",
    )

    instance = provision_azure(api)
    aws.wait_for_workflows()

    failed = api.get(instance["id"])
    assert failed["status"] == "ERROR"
    # A stable code and a sentence of ours; Azure's own message is in the logs only.
    assert failed["statusReason"] == (
        "launch_failed: the cloud refused the launch (AllocationFailed)"
    )
    assert aws.execution_status(failed["executionId"]) == "FAILED"
    # The failed VM was released: its delete was requested when the record went to ERROR.
    assert f"DELETE virtualMachines {instance['id']}" in aws.arm_fake.calls
    assert failed["costUsd"] == "0.000000"  # Azure: no minimum, and no second passed


def test_a_quota_refusal_at_launch_ends_in_error_and_leaves_nothing_behind(api, aws):
    aws.arm_fake.fail_next(
        "PUT", "virtualMachines", 409, "OperationNotAllowed",
        message="Operation could not be completed as it results in exceeding approved "
        "standardNCFamily Cores quota.",
    )

    instance = provision_azure(api)
    aws.wait_for_workflows()

    failed = api.get(instance["id"])
    assert failed["status"] == "ERROR"
    assert failed["statusReason"] == (
        "launch_failed: the cloud refused the launch (OperationNotAllowed)"
    )
    assert failed["cloudResourceId"] is None
    assert aws.arm_fake.vm_names() == []
    assert aws.arm_fake.nic_names() == []


def test_rejected_azure_credentials_fail_the_workflow_without_quoting_the_secret(api, aws):
    aws.arm_fake.reject_credentials = True

    instance = provision_azure(api)
    aws.wait_for_workflows()

    # RecordError cannot check for a VM to release either, so the record stays live for the
    # reaper (as on AWS when permissions are missing); the execution says why.
    record = api.get(instance["id"])
    assert record["status"] == "PROVISIONING"
    execution = boto3.client("stepfunctions", region_name="us-east-1").describe_execution(
        executionArn=record["executionId"]
    )
    assert (execution["status"], execution["error"]) == ("FAILED", "CloudConfigurationError")
    assert "Azure refused the service's credentials (AuthenticationFailed)" in execution["cause"]
    assert aws.arm_fake.client_secret not in execution["cause"]
    assert aws.arm_fake.vm_names() == []


def test_a_deleted_azure_instance_is_terminated_at_once_when_the_vm_answers_404(
    api, aws, clock
):
    instance = provision_azure(api)
    aws.wait_for_workflows()
    clock.advance(minutes=12, seconds=30)

    status, stopping, _ = api.call("DELETE", f"/api/instances/{instance['id']}")
    assert (status, stopping["status"]) == (202, "STOPPING")
    aws.wait_for_workflows()  # the release workflow: DELETE, then reads until the VM is gone

    terminated = api.get(instance["id"])
    assert terminated["status"] == "TERMINATED"
    # 750 s (until Azure accepted the delete) at 0.526 USD/h, per second, no minimum
    assert terminated["costUsd"] == "0.109583"
    assert terminated["billing"]["endedAt"] == "2026-03-02T09:12:30.000Z"
    assert aws.arm_fake.vm_names() == []
    assert aws.arm_fake.nic_names() == []


def test_a_short_azure_run_is_billed_its_seconds_with_no_minimum(api, aws, clock):
    instance = provision_azure(api)
    aws.wait_for_workflows()
    clock.advance(seconds=10)

    api.call("DELETE", f"/api/instances/{instance['id']}")
    aws.wait_for_workflows()

    # EC2 would bill 60 s here; Azure bills the 10 s: 0.526 x 10 / 3600
    assert api.get(instance["id"])["costUsd"] == "0.001461"


def test_an_idle_azure_instance_is_terminated_by_the_reaper(api, aws, clock):
    instance = provision_azure(api, autoTerminateMinutes=5)
    aws.wait_for_workflows()
    clock.advance(minutes=5)

    report = api.tick()  # asks Azure to delete the VM; it still answers Deleting

    assert report["terminatedIdle"] == [instance["id"]]
    assert api.get(instance["id"])["status"] == "STOPPING"
    assert api.tick()["confirmedTerminated"] == [instance["id"]]  # the VM answers 404
    terminated = api.get(instance["id"])
    assert (terminated["status"], terminated["statusReason"]) == ("TERMINATED", "idle_timeout")
    assert terminated["costUsd"] == "0.043833"  # 300 s at 0.526 USD/h


def test_a_vm_deleted_behind_our_back_leaves_its_record_terminated_and_billed_to_then(
    api, aws, clock
):
    instance = provision_azure(api)
    aws.wait_for_workflows()
    clock.advance(minutes=30)
    arm = bootstrap.container().providers.get("azure")
    arm.terminate(api.get(instance["id"])["cloudResourceId"], "eastus")  # in the portal
    aws.arm_fake.deleting_reads = 0

    report = api.tick()

    assert report["terminatedOutsideService"] == [instance["id"]]
    gone = api.get(instance["id"])
    assert (gone["status"], gone["statusReason"]) == ("TERMINATED", "terminated_outside_service")
    # Azure gives no time of deletion: billed to the tick that first saw it gone (30 min).
    assert gone["costUsd"] == "0.263000"


def test_a_vm_whose_os_powered_off_is_found_once_its_agent_falls_silent_and_deleted(
    api, aws, agents, clock
):
    """`shutdown -h now` inside an Azure VM (a user ending a job so, or the agent's dead-man
    switch with no identity to delete the VM) leaves it stopped but allocated, and billed.
    The listing does not show power states: the tick reads the VM once its agent has been
    silent for 3 heartbeats, then deletes it. Billing ends when Azure takes the delete."""
    instance = provision_azure(api, autoTerminateMinutes=120)
    aws.wait_for_workflows()
    vm = api.get(instance["id"])["cloudResourceId"].rsplit("/", 1)[1]
    clock.advance(minutes=1)
    assert agents.heartbeat(instance["id"], utilization=90)[0] == 200
    clock.advance(minutes=1)
    aws.arm_fake.shut_down_from_inside(vm)
    clock.advance(minutes=1)

    reads_before = aws.arm_fake.calls.count(f"GET virtualMachines {vm}")
    calm = api.tick()  # 2 minutes since the last heartbeat: not silent yet, not read
    assert calm["stoppedPoweredOff"] == []
    assert aws.arm_fake.calls.count(f"GET virtualMachines {vm}") == reads_before
    clock.advance(minutes=1)

    report = api.tick()  # reads the VM, finds it stopped, asks Azure to delete it

    assert report["stoppedPoweredOff"] == [instance["id"]]
    assert aws.arm_fake.calls.count(f"GET virtualMachines {vm}") > reads_before
    assert api.get(instance["id"])["status"] == "STOPPING"
    clock.advance(minutes=1)
    assert api.tick()["confirmedTerminated"] == [instance["id"]]  # the VM answers 404
    stopped = api.get(instance["id"])
    assert (stopped["status"], stopped["statusReason"]) == (
        "TERMINATED", "powered_off_outside_service")
    # Stopped but allocated, the VM was billed to the delete: 4 minutes at 0.526 USD/h.
    assert stopped["billing"]["endedAt"] == "2026-03-02T09:04:00.000Z"
    assert stopped["costUsd"] == "0.035067"


def test_missing_azure_settings_refuse_azure_with_503_naming_them_and_aws_still_works(
    api, aws, clock
):
    bootstrap.use(
        Container(settings=replace(aws.settings, azure=AzureSettings()), clock=clock)
    )

    status, body, _ = api.call(
        "POST", "/api/instances", body={"instanceType": "Standard_NC4as_T4_v3"}
    )

    assert (status, body["error"]) == (503, "provider_unavailable")
    assert body["message"] == (
        "Provider 'azure' is not configured in this deployment; missing settings: "
        "AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZURE_LOCATION, AZURE_SUBNET_ID, "
        "AZURE_IMAGE_REFERENCE, AZURE_ADMIN_USERNAME, AZURE_SSH_PUBLIC_KEY."
    )
    assert api.call("GET", "/api/instances")[1]["items"] == []
    assert api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})[0] == 202


def test_one_lifecycle_makes_these_arm_calls_in_this_order(api, aws):
    instance = provision_azure(api)
    aws.wait_for_workflows()
    api.call("DELETE", f"/api/instances/{instance['id']}")
    aws.wait_for_workflows()

    vm, nic = instance["id"], f"{instance['id']}-nic"
    assert aws.arm_fake.calls == [
        "GET openid ", "POST token ",  # sign-in, once per process while the token is valid
        f"GET virtualMachines {vm}",  # Launch: none yet (404), so a new agent secret
        f"GET virtualMachines {vm}",  # the provider's own look before it creates one
        f"PUT networkInterfaces {nic}",
        f"PUT virtualMachines {vm}",  # accepted (201), not awaited
        f"GET virtualMachines {vm}",  # CheckRunning: Creating
        f"GET virtualMachines {vm}",  # CheckRunning: running
        f"GET networkInterfaces {nic}",  # its private IP
        f"GET virtualMachines {vm}",  # CheckStatus: VM agent Ready
        f"GET networkInterfaces {nic}",
        f"GET virtualMachines {vm}",  # Release, after the API's DELETE: still running
        f"DELETE virtualMachines {vm}",  # accepted (202)
        f"GET virtualMachines {vm}",  # same step: Deleting
        f"GET virtualMachines {vm}",  # next Release step: 404, TERMINATED
    ]
    assert api.get(instance["id"])["status"] == "TERMINATED"


def test_an_azure_vm_of_this_deployment_with_no_record_is_deleted_and_a_foreign_one_kept(
    api, aws, clock
):
    from chalicelib.providers.azure_compute import AzureComputeProvider
    from chalicelib.providers.base import LaunchRequest
    from local.emulator import azure_connection, azure_settings

    def launch_behind_our_back(deployment: str, record_id: str) -> None:
        provider = AzureComputeProvider(
            azure_settings(aws.arm), azure_connection(aws.arm), deployment=deployment
        )
        provider.launch(LaunchRequest(record_id, "mallory", None, "Standard_NC4as_T4_v3", "eastus"))

    orphan, foreign = "inst-" + "a" * 32, "inst-" + "b" * 32
    launch_behind_our_back(aws.settings.deployment_name, orphan)
    launch_behind_our_back("another-deployment", foreign)

    clock.advance(seconds=60)
    assert api.tick()["orphansTerminated"] == []  # within the grace period
    clock.advance(seconds=60)
    report = api.tick()

    [deleted] = report["orphansTerminated"]
    assert deleted.endswith(f"/virtualMachines/{orphan}")
    assert f"DELETE virtualMachines {orphan}" in aws.arm_fake.calls
    assert f"DELETE virtualMachines {foreign}" not in aws.arm_fake.calls
    assert foreign in aws.arm_fake.vm_names()
