"""The Azure SDK side of the Azure provider: clients, retry policy and request bodies. Imported on
the first Azure call only, so importing the app (or building the provider) never loads the SDK."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as compute
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network import models as network

from chalicelib.settings import AzureSettings

PUBLIC_ARM_ENDPOINT = "https://management.azure.com"
# One ARM call may be retried a few times inside one workflow step (whose Lambda has 60 s), on
# 429, 408 and 5xx: a Retry-After up to MAX_RETRY_AFTER_SECONDS is honoured in-process, a longer
# one ends the call (CloudThrottlingError) and the workflow's own Retry waits instead.
RETRY_TOTAL = 3
RETRY_BACKOFF_FACTOR = 0.8
RETRY_BACKOFF_MAX_SECONDS = 8
MAX_RETRY_AFTER_SECONDS = 10
CALL_TIMEOUT_SECONDS = 40


class BoundedRetryPolicy(RetryPolicy):
    """azure-core's retry policy, except that a server asking for a longer wait than
    `max_retry_after` seconds gets its error back at once instead of a long in-process sleep."""

    def __init__(self, max_retry_after: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_retry_after = max_retry_after

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after is not None and retry_after > self._max_retry_after:
            return False
        return super().is_retry(settings, response)


class SleepingTransport(RequestsTransport):
    """The requests transport with an injected sleep: every wait of the SDK (retry backoff,
    Retry-After, poller delays) goes through `transport.sleep`, so tests record it instead."""

    def __init__(self, sleep: Callable[[float], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sleep = sleep

    def sleep(self, duration: float) -> None:
        self._sleep(duration)


@dataclass(frozen=True)
class ArmClients:
    compute: ComputeManagementClient
    network: NetworkManagementClient


def build_clients(
    settings: AzureSettings,
    credential: Any,
    sleep: Callable[[float], None],
    transport_options: Mapping[str, Any],
) -> ArmClients:
    if credential is None:
        # Managed identity in a deployment, a service principal from AZURE_CLIENT_ID/
        # AZURE_TENANT_ID/AZURE_CLIENT_SECRET (or a federated token), or a developer's login.
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    endpoint = (settings.arm_endpoint or PUBLIC_ARM_ENDPOINT).rstrip("/")
    options: dict[str, Any] = {
        "base_url": endpoint,
        "credential_scopes": [f"{endpoint}/.default"],
        # azure-core reads for up to 300 s by default; fail fast instead (see bootstrap's EC2).
        "transport": SleepingTransport(
            sleep, **{"connection_timeout": 5, "read_timeout": 20, **transport_options}
        ),
        "retry_policy": BoundedRetryPolicy(
            MAX_RETRY_AFTER_SECONDS,
            retry_total=RETRY_TOTAL,
            retry_backoff_factor=RETRY_BACKOFF_FACTOR,
            retry_backoff_max=RETRY_BACKOFF_MAX_SECONDS,
            timeout=CALL_TIMEOUT_SECONDS,
        ),
    }
    subscription = str(settings.subscription_id)
    return ArmClients(
        compute=ComputeManagementClient(credential, subscription, **options),
        network=NetworkManagementClient(credential, subscription, **options),
    )


def nic_parameters(
    location: str, subnet_id: str, tags: Mapping[str, str]
) -> network.NetworkInterface:
    return network.NetworkInterface(
        location=location,
        tags=dict(tags),
        ip_configurations=[
            network.NetworkInterfaceIPConfiguration(
                name="ipconfig1",
                subnet=network.Subnet(id=subnet_id),
                private_ip_allocation_method="Dynamic",
                primary=True,
            )
        ],
    )


def image_reference(value: str) -> compute.ImageReference:
    """`publisher:offer:sku:version` (a marketplace image) or an image's resource id."""
    if value.startswith("/"):
        return compute.ImageReference(id=value)
    publisher, offer, sku, version = value.split(":")
    return compute.ImageReference(publisher=publisher, offer=offer, sku=sku, version=version)


def vm_parameters(
    settings: AzureSettings,
    vm_name: str,
    size: str,
    nic_id: str,
    tags: Mapping[str, str],
    user_data: str | None = None,
) -> compute.VirtualMachine:
    user = str(settings.admin_username)
    extra: dict[str, Any] = {}
    if settings.agent_identity_id:
        # The agent's dead-man switch deletes its own VM with this identity (docs/agent.md).
        extra["identity"] = compute.VirtualMachineIdentity(
            type="UserAssigned",
            user_assigned_identities={
                settings.agent_identity_id: compute.UserAssignedIdentitiesValue()
            },
        )
    if settings.encryption_at_host:
        extra["security_profile"] = compute.SecurityProfile(encryption_at_host=True)
    return compute.VirtualMachine(
        location=str(settings.location),
        tags=dict(tags),
        **extra,
        hardware_profile=compute.HardwareProfile(vm_size=size),
        storage_profile=compute.StorageProfile(
            image_reference=image_reference(str(settings.image_reference)),
            # The OS disk and the NIC go with the VM: one delete releases everything billed.
            os_disk=compute.OSDisk(create_option="FromImage", delete_option="Delete"),
        ),
        os_profile=compute.OSProfile(
            computer_name=vm_name,
            admin_username=user,
            # cloud-init reads customData: the agent, its configuration and its unit.
            custom_data=base64.b64encode(user_data.encode()).decode() if user_data else None,
            linux_configuration=compute.LinuxConfiguration(
                disable_password_authentication=True,
                ssh=compute.SshConfiguration(
                    public_keys=[
                        compute.SshPublicKey(
                            path=f"/home/{user}/.ssh/authorized_keys",
                            key_data=str(settings.ssh_public_key),
                        )
                    ]
                ),
                provision_vm_agent=True,
            ),
        ),
        network_profile=compute.NetworkProfile(
            network_interfaces=[
                compute.NetworkInterfaceReference(id=nic_id, primary=True, delete_option="Delete")
            ]
        ),
    )
