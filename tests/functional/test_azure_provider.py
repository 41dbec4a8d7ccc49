"""The Azure adapter through the real Azure SDK (credential, pipeline, retry policy, serializers)
against the local Resource Manager fake, served over HTTPS on 127.0.0.1."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from chalicelib.providers.azure_compute import AzureComputeProvider, resource_names
from chalicelib.providers.base import (
    CloudCapacityError,
    CloudConfigurationError,
    CloudLaunchFailedError,
    CloudProviderError,
    CloudState,
    CloudThrottlingError,
    LaunchRequest,
)
from local.arm_fake import ArmFake, ServedArm, served
from local.emulator import AZURE_SSH_KEY, azure_connection, azure_settings

RECORD = "inst-0123456789abcdef0123456789abcdef"
DEPLOYMENT = "test-deployment"
VM_ID = (
    "/subscriptions/00000000-0000-0000-0000-0000000000a2/resourceGroups/provisioner-local"
    f"/providers/Microsoft.Compute/virtualMachines/{RECORD}"
)


@dataclass
class Azure:
    provider: AzureComputeProvider
    fake: ArmFake
    arm: ServedArm
    waits: list[float]

    def launch(self, record_id: str = RECORD, task_id: str | None = "scan-7"):
        return self.provider.launch(
            LaunchRequest(
                record_id=record_id, user_id="alice", task_id=task_id,
                instance_type="Standard_NC4as_T4_v3", region="eastus",
            )
        )

    def describe(self, resource_id: str = VM_ID):
        return self.provider.describe(resource_id, "eastus")

    def arm_calls(self) -> list[str]:
        """The Resource Manager requests made so far (sign-in excluded)."""
        return [c for c in self.fake.calls if not c.startswith(("GET openid", "POST token"))]


@pytest.fixture
def azure() -> Iterator[Azure]:
    with served(ArmFake()) as arm:
        waits: list[float] = []
        provider = AzureComputeProvider(
            azure_settings(arm), azure_connection(arm, waits.append), deployment=DEPLOYMENT
        )
        yield Azure(provider, arm.fake, arm, waits)


def test_launch_creates_the_nic_then_the_vm_and_does_not_wait_for_it(azure):
    view = azure.launch()

    assert view.resource_id == VM_ID
    assert view.state is CloudState.PENDING
    assert azure.arm_calls() == [
        f"GET virtualMachines {RECORD}",  # a VM already launched for the record? (404)
        f"PUT networkInterfaces {RECORD}-nic",
        f"PUT virtualMachines {RECORD}",
    ]
    assert azure.waits == []


def test_the_vm_is_a_linux_vm_of_the_requested_size_reachable_by_ssh_key_only(azure):
    azure.launch()

    vm = azure.fake.vm_model(RECORD)
    properties = vm["properties"]
    assert vm["location"] == "eastus"
    assert properties["hardwareProfile"] == {"vmSize": "Standard_NC4as_T4_v3"}
    assert properties["storageProfile"]["imageReference"] == {
        "publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy",
        "sku": "22_04-lts-gen2", "version": "latest",
    }
    linux = properties["osProfile"]["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"] == [
        {"path": "/home/provisioner/.ssh/authorized_keys", "keyData": AZURE_SSH_KEY}
    ]
    assert "adminPassword" not in properties["osProfile"]


def test_the_os_disk_and_the_nic_are_deleted_with_the_vm(azure):
    azure.launch()

    properties = azure.fake.vm_model(RECORD)["properties"]
    assert properties["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    [nic] = properties["networkProfile"]["networkInterfaces"]
    assert nic["id"].endswith(f"/networkInterfaces/{RECORD}-nic")
    assert nic["properties"] == {"primary": True, "deleteOption": "Delete"}


def test_the_vm_and_its_nic_are_tagged_with_the_deployment_record_user_and_task(azure):
    azure.launch()

    tags = {
        "provisioner:managed": "true",
        "provisioner:deployment": DEPLOYMENT,
        "provisioner:record-id": RECORD,
        "provisioner:user-id": "alice",
        "provisioner:task-id": "scan-7",
    }
    assert azure.fake.vm_model(RECORD)["tags"] == tags
    assert azure.fake.nic_model(f"{RECORD}-nic")["tags"] == tags


def test_describe_follows_provisioning_then_power_state_then_the_vm_agent(azure):
    azure.launch()

    creating = azure.describe()
    assert (creating.state, creating.checks_passed) == (CloudState.PENDING, False)
    assert creating.detail == {"provisioningState": "creating"}

    booted = azure.describe()
    assert (booted.state, booted.checks_passed) == (CloudState.RUNNING, False)
    assert booted.private_ip == "10.0.0.4"  # read from the NIC
    assert booted.public_ip is None

    ready = azure.describe()
    assert (ready.state, ready.checks_passed) == (CloudState.RUNNING, True)
    assert ready.detail == {"provisioningState": "succeeded", "powerState": "running"}


def test_a_retried_launch_finds_its_vm_and_creates_no_second_one(azure):
    first = azure.launch()
    again = azure.launch()

    assert again.resource_id == first.resource_id
    assert azure.fake.vm_names() == [RECORD]
    assert azure.fake.nic_names() == [f"{RECORD}-nic"]
    assert [c for c in azure.arm_calls() if c.startswith("PUT")] == [
        f"PUT networkInterfaces {RECORD}-nic", f"PUT virtualMachines {RECORD}",
    ]


def test_a_launch_retried_after_its_vm_was_refused_reuses_the_same_nic(azure):
    azure.fake.fail_next("PUT", "virtualMachines", 429, "SubscriptionRequestsThrottled",
                         retry_after=1, times=4)
    with pytest.raises(CloudThrottlingError):
        azure.launch()

    azure.launch()

    assert azure.fake.vm_names() == [RECORD]
    assert azure.fake.nic_names() == [f"{RECORD}-nic"]


def test_arm_throttling_is_retried_by_the_sdk_honouring_retry_after(azure):
    azure.fake.fail_next("PUT", "virtualMachines", 429, "SubscriptionRequestsThrottled",
                         retry_after=1)

    view = azure.launch()

    assert view.state is CloudState.PENDING
    assert azure.waits == [1]  # the Retry-After, recorded instead of slept
    assert azure.arm_calls().count(f"PUT virtualMachines {RECORD}") == 2


def test_a_server_error_is_retried_by_the_sdk(azure):
    azure.fake.fail_next("GET", "virtualMachines", 503, "ServiceUnavailable")

    assert azure.launch().state is CloudState.PENDING
    assert azure.fake.vm_names() == [RECORD]


def test_throttling_that_outlasts_the_sdk_retries_is_a_throttling_error(azure):
    azure.fake.fail_next("PUT", "virtualMachines", 429, "SubscriptionRequestsThrottled",
                         retry_after=2, times=10)

    with pytest.raises(CloudThrottlingError) as refused:
        azure.launch()

    assert refused.value.cloud_code == "SubscriptionRequestsThrottled"
    assert azure.waits == [2, 2, 2]  # three retries, then the workflow's Retry takes over
    assert azure.fake.vm_names() == []


def test_a_retry_after_longer_than_a_step_can_wait_is_left_to_the_workflow(azure):
    azure.fake.fail_next("PUT", "virtualMachines", 429, "SubscriptionRequestsThrottled",
                         retry_after=600)

    with pytest.raises(CloudThrottlingError):
        azure.launch()

    assert azure.waits == []
    assert azure.arm_calls().count(f"PUT virtualMachines {RECORD}") == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (409, "OperationNotAllowed"),  # what ARM answers when the cores quota is exhausted
        (409, "SkuNotAvailable"),
        (400, "QuotaExceeded"),
        (409, "AllocationFailed"),
        (409, "ZonalAllocationFailed"),
    ],
)
def test_capacity_and_quota_refusals_are_capacity_errors_and_leave_no_nic(azure, status, code):
    azure.fake.fail_next("PUT", "virtualMachines", status, code, message=f"{code} in eastus.")

    with pytest.raises(CloudCapacityError) as refused:
        azure.launch()

    assert refused.value.cloud_code == code
    assert str(refused.value) == f"Azure VM creation failed ({code})"
    assert azure.fake.vm_names() == []
    assert azure.fake.nic_names() == []


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "InvalidParameter"),
        (400, "InvalidResourceReference"),
        (404, "ImageNotFound"),
        (403, "AuthorizationFailed"),
        (403, "LinkedAuthorizationFailed"),
    ],
)
def test_refusals_caused_by_our_settings_are_configuration_errors(azure, status, code):
    azure.fake.fail_next("PUT", "virtualMachines", status, code)

    with pytest.raises(CloudConfigurationError) as refused:
        azure.launch()

    assert refused.value.cloud_code == code


def test_a_subnet_that_does_not_exist_is_a_configuration_error(azure):
    provider = AzureComputeProvider(
        replace(azure_settings(azure.arm), subnet_id=azure.fake.subnet_id + "-missing"),
        azure_connection(azure.arm),
        deployment=DEPLOYMENT,
    )

    with pytest.raises(CloudConfigurationError) as refused:
        provider.launch(LaunchRequest(RECORD, "alice", None, "Standard_NC4as_T4_v3", "eastus"))

    assert refused.value.cloud_code == "InvalidResourceReference"
    assert "network interface creation" in str(refused.value)


def test_an_unknown_arm_error_code_is_a_provider_error_with_that_code(azure):
    azure.fake.fail_next("PUT", "virtualMachines", 400, "SomethingNew", message="new failure")

    with pytest.raises(CloudProviderError) as refused:
        azure.launch()

    assert type(refused.value) is CloudProviderError
    assert refused.value.cloud_code == "SomethingNew"


def test_a_vm_whose_provisioning_fails_later_reports_the_azure_code_and_logs_its_message(
    azure, caplog
):
    azure.fake.fail_next_provisioning(
        "AllocationFailed", "Allocation failed. We do not have sufficient capacity for the "
        "requested VM size in this region.",
    )
    assert azure.launch().state is CloudState.PENDING  # ARM accepted the PUT (201)

    assert azure.describe().state is CloudState.PENDING
    failed = azure.describe()

    assert failed.state is CloudState.FAILED
    assert isinstance(failed.failure, CloudCapacityError)
    assert failed.failure.cloud_code == "AllocationFailed"
    # Azure's own words are for the logs; the error (which a record may show) has the code.
    assert str(failed.failure) == "Azure VM provisioning failed (AllocationFailed)"
    assert "We do not have sufficient capacity" in caplog.text


def test_a_provisioning_failure_with_an_unknown_code_is_a_launch_failure(azure):
    azure.fake.fail_next_provisioning("OSProvisioningTimedOut", "OS provisioning timed out.")
    azure.launch()
    azure.describe()

    failure = azure.describe().failure

    assert type(failure) is CloudLaunchFailedError
    assert failure.cloud_code == "OSProvisioningTimedOut"


def test_terminate_starts_the_delete_and_the_vm_answers_404_once_it_is_gone(azure):
    azure.launch()

    azure.provider.terminate(VM_ID, "eastus")

    assert azure.describe().state is CloudState.TERMINATING
    gone = azure.describe()
    assert (gone.state, gone.resource_id) == (CloudState.TERMINATED, VM_ID)
    assert azure.fake.vm_names() == []
    assert azure.fake.nic_names() == []  # deleted with the VM (deleteOption)
    assert f"DELETE virtualMachines {RECORD}" in azure.arm_calls()


def test_terminating_a_vm_that_is_already_gone_is_not_an_error(azure):
    azure.provider.terminate(VM_ID, "eastus")
    azure.provider.terminate(VM_ID.replace("provisioner-local", "deleted-group"), "eastus")

    assert azure.describe().state is CloudState.TERMINATED


def test_find_for_record_finds_the_vm_named_after_the_record(azure):
    assert azure.provider.find_for_record(RECORD, "eastus") is None

    azure.launch()

    found = azure.provider.find_for_record(RECORD, "eastus")
    assert found is not None and found.resource_id == VM_ID


def test_a_nic_still_being_provisioned_postpones_the_vm_to_a_retried_launch(azure):
    azure.fake.nic_updating_reads = 1

    with pytest.raises(CloudThrottlingError) as postponed:
        azure.launch()
    assert postponed.value.cloud_code == "NetworkInterfaceNotReady"
    assert azure.fake.vm_names() == []

    assert azure.launch().state is CloudState.PENDING
    assert azure.fake.vm_names() == [RECORD]


def test_rejected_credentials_are_a_configuration_error_that_quotes_no_secret(azure):
    azure.fake.reject_credentials = True

    with pytest.raises(CloudConfigurationError) as refused:
        azure.launch()

    message = str(refused.value)
    assert "refused the service's credentials" in message
    assert azure.fake.client_secret not in message
    assert "AADSTS" not in message and "Bearer" not in message


def test_a_token_that_arm_refuses_is_a_configuration_error(azure):
    azure.fake.fail_next("GET", "virtualMachines", 401, "InvalidAuthenticationToken",
                         message="The access token is invalid.")

    with pytest.raises(CloudConfigurationError) as refused:
        azure.launch()

    assert refused.value.cloud_code == "InvalidAuthenticationToken"


def test_an_unreachable_resource_manager_is_a_provider_error(azure):
    settings = replace(azure_settings(azure.arm), arm_endpoint="https://127.0.0.1:9")
    provider = AzureComputeProvider(
        settings, azure_connection(azure.arm, lambda _: None), deployment=DEPLOYMENT
    )

    with pytest.raises(CloudProviderError) as refused:
        provider.describe(VM_ID, "eastus")

    assert refused.value.cloud_code == "ServiceRequestError"


def test_an_image_resource_id_is_used_as_the_image_reference(azure):
    image = (f"/subscriptions/{azure.fake.subscription_id}/resourceGroups/images/providers/"
             "Microsoft.Compute/galleries/gpu/images/cuda/versions/1.0.0")
    provider = AzureComputeProvider(
        replace(azure_settings(azure.arm), image_reference=image), azure_connection(azure.arm),
        deployment=DEPLOYMENT,
    )

    provider.launch(LaunchRequest(RECORD, "alice", None, "Standard_NV36ads_A10_v5", "eastus"))

    assert azure.fake.vm_model(RECORD)["properties"]["storageProfile"]["imageReference"] == {
        "id": image
    }


def test_building_the_provider_makes_no_call(azure):
    AzureComputeProvider(
        azure_settings(azure.arm), azure_connection(azure.arm), deployment=DEPLOYMENT
    )

    assert azure.fake.calls == []


@pytest.mark.parametrize(
    ("record_id", "expected"),
    [
        (RECORD, (RECORD, f"{RECORD}-nic")),
        ("weird/id with spaces", ("rec-", "-nic")),
    ],
)
def test_resource_names_derive_from_the_record_and_are_valid_azure_names(record_id, expected):
    vm, nic = resource_names(record_id)

    assert vm.startswith(expected[0]) and nic.endswith(expected[1])
    assert resource_names(record_id) == (vm, nic)
    assert len(vm) <= 64 and vm.replace("-", "").isalnum()


def test_a_vm_gets_the_agent_in_custom_data_its_identity_encryption_at_host_and_cost_tags():
    identity = (
        "/subscriptions/00000000-0000-0000-0000-0000000000a2/resourceGroups/provisioner-local"
        "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/provisioner-agent"
    )
    with served(ArmFake()) as arm:
        settings = replace(
            azure_settings(arm), agent_identity_id=identity, encryption_at_host=True
        )
        provider = AzureComputeProvider(
            settings, azure_connection(arm, lambda seconds: None), deployment=DEPLOYMENT,
            cost_tags={"project": "oncology", "provisioner:managed": "false"},
        )
        provider.launch(LaunchRequest(
            record_id=RECORD, user_id="alice", task_id=None, instance_type="Standard_NC4as_T4_v3",
            region="eastus", user_data="#cloud-config\n{}",
        ))

        vm = arm.fake.vm_model(RECORD)
        nic = arm.fake.nic_model(f"{RECORD}-nic")
    assert base64.b64decode(vm["properties"]["osProfile"]["customData"]) == b"#cloud-config\n{}"
    assert vm["identity"]["type"] == "UserAssigned"
    assert list(vm["identity"]["userAssignedIdentities"]) == [identity]
    assert vm["properties"]["securityProfile"] == {"encryptionAtHost": True}
    for resource in (vm, nic):
        assert resource["tags"]["project"] == "oncology"
        assert resource["tags"]["provisioner:managed"] == "true"  # ours cannot be overridden
    [configuration] = nic["properties"]["ipConfigurations"]
    assert "publicIPAddress" not in configuration["properties"]  # no public address


def test_a_snapshot_reads_the_power_state_only_of_the_vms_asked_for_it(azure):
    """The listing has no power state: a VM powered off from inside is listed as running
    unless its power state is asked for, which costs one read of that VM."""
    azure.launch()
    azure.describe()  # past Creating
    azure.fake.shut_down_from_inside(RECORD)
    before = len(azure.arm_calls())

    listed = azure.provider.snapshot("eastus", [VM_ID])
    assert listed.state_of(VM_ID).state is CloudState.RUNNING
    assert azure.arm_calls()[before:] == ["GET virtualMachineList "]  # the listing alone

    looked = azure.provider.snapshot("eastus", [VM_ID], power_wanted=[VM_ID])
    [machine] = looked.managed
    assert looked.state_of(VM_ID).state is CloudState.STOPPED
    assert (machine.resource_id, machine.state) == (VM_ID, CloudState.STOPPED)
    # Stopped but allocated is billed: Azure gives no time to end billing from.
    assert machine.unbilled_since is None
    assert azure.arm_calls()[before + 1:] == [
        "GET virtualMachineList ", f"GET virtualMachines {RECORD}",
    ]


def test_a_failed_power_state_read_leaves_the_vm_as_listed_and_the_look_stands(azure):
    azure.launch()
    azure.describe()  # past Creating
    azure.fake.shut_down_from_inside(RECORD)
    azure.fake.fail_next("GET", "virtualMachines", 403, "AuthorizationFailed")

    look = azure.provider.snapshot("eastus", [VM_ID], power_wanted=[VM_ID])

    assert look.state_of(VM_ID).state is CloudState.RUNNING  # the listing's word, not gone
    again = azure.provider.snapshot("eastus", [VM_ID], power_wanted=[VM_ID])
    assert again.state_of(VM_ID).state is CloudState.STOPPED
