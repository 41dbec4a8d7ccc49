"""The local Resource Manager answers as ARM does: the SDK's own long-running-operation poller
(ARMPolling, following Azure-AsyncOperation and Location) completes against it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError

from chalicelib.providers import azure_arm
from chalicelib.settings import AzureSettings
from local.arm_fake import LRO_RETRY_AFTER, ArmFake, served
from local.emulator import (
    AZURE_ADMIN,
    AZURE_IMAGE,
    AZURE_SSH_KEY,
    azure_connection,
    azure_settings,
)


@pytest.fixture
def arm() -> Iterator[tuple[ArmFake, azure_arm.ArmClients, list[float]]]:
    with served(ArmFake()) as served_arm:
        waits: list[float] = []
        connection = azure_connection(served_arm, waits.append)
        clients = azure_arm.build_clients(
            azure_settings(served_arm), connection.credential, connection.sleep,
            connection.transport_options,
        )
        yield served_arm.fake, clients, waits


def create_nic(fake: ArmFake, clients: azure_arm.ArmClients, name: str):
    return clients.network.network_interfaces.begin_create_or_update(
        fake.resource_group, name, azure_arm.nic_parameters("eastus", fake.subnet_id, {})
    ).result()


def vm_body(fake: ArmFake, nic_id: str, name: str, size: str = "Standard_NC4as_T4_v3"):
    settings = AzureSettings(
        fake.subscription_id, fake.resource_group, fake.location, fake.subnet_id,
        AZURE_IMAGE, AZURE_ADMIN, AZURE_SSH_KEY, fake.base_url,
    )
    return azure_arm.vm_parameters(settings, name, size, nic_id, {})


@pytest.mark.parametrize("size", ["Standard_NC6", "Standard_NV12"])
def test_a_vm_of_a_retired_size_is_refused_as_azure_refuses_it_and_nothing_is_created(
    arm, size
):
    fake, clients, _ = arm
    nic = create_nic(fake, clients, "old-nic")

    with pytest.raises(HttpResponseError) as refused:
        clients.compute.virtual_machines.begin_create_or_update(
            fake.resource_group, "old", vm_body(fake, nic.id, "old", size)
        ).result()

    assert (refused.value.status_code, refused.value.error.code) == (409, "SkuNotAvailable")
    assert size in refused.value.error.message
    with pytest.raises(HttpResponseError):
        clients.compute.virtual_machines.get(fake.resource_group, "old")


def test_the_sdk_poller_follows_a_vm_creation_to_succeeded(arm):
    fake, clients, waits = arm
    nic = create_nic(fake, clients, "vm1-nic")

    poller = clients.compute.virtual_machines.begin_create_or_update(
        fake.resource_group, "vm1", vm_body(fake, nic.id, "vm1")
    )
    vm = poller.result()

    assert vm.provisioning_state == "Succeeded"
    assert waits  # the poller waited between reads of Azure-AsyncOperation (recorded)
    assert any(c.startswith("GET operation") for c in fake.calls)


def test_the_sdk_poller_reports_an_asynchronous_allocation_failure_by_its_code(arm):
    fake, clients, _ = arm
    nic = create_nic(fake, clients, "vm2-nic")
    fake.fail_next_provisioning("AllocationFailed", "Allocation failed.")

    with pytest.raises(HttpResponseError) as failed:
        clients.compute.virtual_machines.begin_create_or_update(
            fake.resource_group, "vm2", vm_body(fake, nic.id, "vm2")
        ).result()

    assert failed.value.error.code == "AllocationFailed"


def test_the_sdk_poller_follows_a_vm_deletion_until_the_vm_is_gone(arm):
    fake, clients, _ = arm
    nic = create_nic(fake, clients, "vm3-nic")
    clients.compute.virtual_machines.begin_create_or_update(
        fake.resource_group, "vm3", vm_body(fake, nic.id, "vm3"), polling=False
    )

    clients.compute.virtual_machines.begin_delete(fake.resource_group, "vm3").result()

    assert fake.vm_names() == []
    assert fake.nic_names() == []


def test_long_running_operations_carry_the_headers_arm_sends(arm):
    fake, clients, _ = arm
    nic = create_nic(fake, clients, "vm4-nic")
    headers: dict[str, str] = {}

    def keep_headers(pipeline_response, deserialized, response_headers):
        headers.update(pipeline_response.http_response.headers)
        return deserialized

    clients.compute.virtual_machines.begin_create_or_update(
        fake.resource_group, "vm4", vm_body(fake, nic.id, "vm4"), polling=False,
        cls=keep_headers,
    ).result()

    assert "/providers/Microsoft.Compute/locations/eastus/operations/" in (
        headers["Azure-AsyncOperation"]
    )
    assert headers["Retry-After"] == LRO_RETRY_AFTER
