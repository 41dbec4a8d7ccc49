"""Azure adapter of CloudProvider: one NIC and one Linux GPU VM per record, named after it,
through azure-mgmt-network and azure-mgmt-compute, which are imported on the first Azure call."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chalicelib.providers.base import (
    DEPLOYMENT_TAG,
    MANAGED_TAG,
    RECORD_ID_TAG,
    TASK_ID_TAG,
    USER_ID_TAG,
    CloudCapacityError,
    CloudConfigurationError,
    CloudInstanceView,
    CloudLaunchFailedError,
    CloudMachine,
    CloudProviderError,
    CloudSnapshot,
    CloudState,
    CloudThrottlingError,
    LaunchRequest,
    as_utc,
)
from chalicelib.settings import AzureSettings

if TYPE_CHECKING:
    # Types only: the SDK is imported on the first Azure call (chalicelib/providers/azure_arm.py).
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute.models import (
        InstanceViewStatus,
        VirtualMachine,
        VirtualMachineInstanceView,
    )

    from chalicelib.providers.azure_arm import ArmClients

logger = logging.getLogger(__name__)

_THROTTLING_CODES = (
    "TooManyRequests", "SubscriptionRequestsThrottled", "TenantRequestsThrottled",
    "ResourceRequestsThrottled",
)  # fmt: skip
_CAPACITY_CODES = (
    "AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest", "SkuNotAvailable", "QuotaExceeded",
    "OperationNotAllowed",
)  # fmt: skip
_CONFIGURATION_CODES = (
    "InvalidParameter", "InvalidResourceReference", "ImageNotFound", "PlatformImageNotFound",
    "SubnetNotFound", "InvalidSubnetId", "LinkedAuthorizationFailed", "AuthorizationFailed",
    "InvalidAuthenticationToken", "AuthenticationFailed", "ResourceGroupNotFound",
    "SubscriptionNotFound", "MissingSubscriptionRegistration",
    "MarketplacePurchaseEligibilityFailed", "ResourcePurchaseValidationFailed",
)  # fmt: skip
_ERRORS_BY_CODE: dict[str, type[CloudProviderError]] = {
    code.lower(): error
    for codes, error in (
        (_THROTTLING_CODES, CloudThrottlingError),
        (_CAPACITY_CODES, CloudCapacityError),
        (_CONFIGURATION_CODES, CloudConfigurationError),
    )
    for code in codes
}
_STOPPED_POWER_STATES = ("stopping", "stopped", "deallocating", "deallocated")
# Azure names: letters, digits and hyphens, and a Linux computer name of at most 64 characters.
_SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,55}$")


@dataclass(frozen=True)
class AzureConnection:
    """How the provider reaches Resource Manager. The defaults are a deployment's:
    DefaultAzureCredential (built on first use), the SDK's own transport, real sleeps.
    The local run and the tests pass a credential and transport options (a CA bundle) for
    the local fake, and a sleep that records instead of waiting."""

    credential: TokenCredential | None = None
    # Keyword arguments of the requests transport (connection_verify: the fake's CA bundle).
    transport_options: Mapping[str, object] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep


def resource_names(record_id: str) -> tuple[str, str]:
    """The VM's and the NIC's names for a record: the same on every retry of its launch."""
    base = record_id
    if not _SAFE_NAME.match(record_id):
        base = "rec-" + hashlib.sha256(record_id.encode()).hexdigest()[:40]
    return base, f"{base}-nic"


def _text(value: object) -> str:
    """An SDK field as plain text (some are str enums, whose str() is the member's name)."""
    return str(getattr(value, "value", value) or "")


def _power_state(instance_view: VirtualMachineInstanceView | None) -> str | None:
    """`running`, `stopped`, `deallocated`, ... from an instance view's PowerState/ status;
    None without an instance view (a listing) or such a status."""
    statuses = (instance_view.statuses if instance_view else None) or []
    return next(
        (
            _text(s.code).split("/", 1)[1].lower()
            for s in statuses
            if _text(s.code).startswith("PowerState/")
        ),
        None,
    )


def _error_code(exc: HttpResponseError) -> str | None:
    error = exc.error
    code = error.code if error is not None else None
    if code and code.lower() in _ERRORS_BY_CODE:
        return str(code)
    # ARM sometimes wraps the telling code in the details of a generic one.
    for detail in (error.details if error is not None else None) or []:
        detail_code = detail.code
        if detail_code and detail_code.lower() in _ERRORS_BY_CODE:
            return str(detail_code)
    return str(code) if code else None


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn an azure-core error into the domain error for its ARM code (never its message)."""
    try:
        yield
    except CloudProviderError:
        raise
    except Exception as exc:
        from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

        if isinstance(exc, ClientAuthenticationError):
            # Neither the exception's text nor the request goes into the message: an identity
            # library's error may quote what it sent.
            code = _error_code(exc) or "AuthenticationFailed"
            raise CloudConfigurationError(
                f"Azure {action} failed: Azure refused the service's credentials ({code}). "
                "Check the identity the service runs as (managed identity or service "
                "principal) and its role on the resource group.",
                cloud_code=code,
            ) from exc
        if isinstance(exc, HttpResponseError):
            code = _error_code(exc) or f"HTTP{exc.status_code}"
            error_class = _ERRORS_BY_CODE.get(code.lower(), CloudProviderError)
            if exc.status_code == 429:
                error_class = CloudThrottlingError
            message = (exc.error.message if exc.error is not None else None) or exc.reason
            # Azure's text names subscriptions and resource ids: logs only, the code travels.
            logger.warning("Azure %s failed (%s): %s", action, code, message)
            raise error_class(f"Azure {action} failed ({code})", cloud_code=code) from exc
        if isinstance(exc, AzureError):
            name = type(exc).__name__
            raise CloudProviderError(
                f"Azure {action} failed: Resource Manager did not answer ({name}).",
                cloud_code=name,
            ) from exc
        raise


def _provisioning_failure(statuses: list[InstanceViewStatus]) -> CloudProviderError:
    """The error Azure recorded on a VM whose provisioning failed after it was accepted:
    a status `ProvisioningState/failed/<Code>` with the message, in the instance view."""
    for status in statuses:
        code = _text(status.code)
        if code.lower().startswith("provisioningstate/failed"):
            cloud_code = code.split("/", 2)[2] if code.count("/") >= 2 else "ProvisioningFailed"
            message = status.message or status.display_status or ""
            logger.warning("Azure VM provisioning failed (%s): %s", cloud_code, message)
            error_class = _ERRORS_BY_CODE.get(cloud_code.lower(), CloudLaunchFailedError)
            if error_class is CloudThrottlingError:
                error_class = CloudLaunchFailedError  # retrying the check would not help
            return error_class(
                f"Azure VM provisioning failed ({cloud_code})", cloud_code=cloud_code
            )
    return CloudLaunchFailedError(
        "Azure VM provisioning failed (ProvisioningFailed): the instance view names no code",
        cloud_code="ProvisioningFailed",
    )


def _agent_ready(instance_view: VirtualMachineInstanceView | None) -> bool:
    agent = instance_view.vm_agent if instance_view is not None else None
    return any(
        _text(status.display_status).lower() == "ready"
        for status in ((agent.statuses if agent is not None else None) or [])
    )


class AzureComputeProvider:
    name = "azure"

    def __init__(
        self,
        settings: AzureSettings,
        connection: AzureConnection | None = None,
        *,
        deployment: str,
        cost_tags: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._deployment = deployment
        self._cost_tags = dict(cost_tags or {})
        self._connection = connection or AzureConnection()
        self._clients: ArmClients | None = None
        self._lock = threading.Lock()

    def launch(self, request: LaunchRequest) -> CloudInstanceView:
        arm = self._arm()
        group = str(self._settings.resource_group)
        vm_name, nic_name = resource_names(request.record_id)
        # A retried launch finds the VM it already created (names derive from the record).
        existing = self._get_vm(group, vm_name)
        if existing is not None:
            return self._view(existing)
        from chalicelib.providers import azure_arm

        tags = {
            **self._cost_tags,
            MANAGED_TAG: "true",
            DEPLOYMENT_TAG: self._deployment,
            RECORD_ID_TAG: request.record_id,
            USER_ID_TAG: request.user_id,
        }
        if request.task_id:
            tags[TASK_ID_TAG] = request.task_id
        # Started, never awaited: Resource Manager usually answers a NIC PUT with the NIC
        # already provisioned, and the VM's long-running creation is watched by the workflow.
        with _translated("network interface creation"):
            nic = arm.network.network_interfaces.begin_create_or_update(
                group, nic_name,
                azure_arm.nic_parameters(
                    str(self._settings.location), str(self._settings.subnet_id), tags
                ),
                polling=False,
            ).result()
        nic_state = _text(nic.properties.provisioning_state if nic.properties else None)
        nic_state = nic_state or "unknown"
        if nic_state.lower() != "succeeded":
            # A VM must not reference a NIC still being set up; the workflow retries this class
            # with backoff, and the retry re-PUTs the same NIC.
            raise CloudThrottlingError(
                f"Azure network interface {nic_name} is still {nic_state}; launch again later.",
                cloud_code="NetworkInterfaceNotReady",
            )
        try:
            with _translated("VM creation"):
                vm = arm.compute.virtual_machines.begin_create_or_update(
                    group, vm_name,
                    azure_arm.vm_parameters(
                        self._settings, vm_name, request.instance_type, str(nic.id), tags,
                        request.user_data,
                    ),
                    polling=False,
                ).result()
        except CloudThrottlingError:
            raise  # retried by the workflow; the NIC is reused then
        except CloudProviderError:
            self._delete_nic_quietly(group, nic_name)  # no VM will ever take it
            raise
        return self._view(vm)

    def describe(self, resource_id: str, region: str) -> CloudInstanceView:
        group, name = self._locate(resource_id)
        vm = self._get_vm(group, name)
        if vm is None:
            return CloudInstanceView(resource_id=resource_id, state=CloudState.TERMINATED)
        return self._view(vm)

    def find_for_record(self, record_id: str, region: str) -> CloudInstanceView | None:
        vm = self._get_vm(str(self._settings.resource_group), resource_names(record_id)[0])
        if vm is None or not self._is_managed(vm):
            return None
        return self._view(vm)

    def terminate(self, resource_id: str, region: str) -> CloudState:
        group, name = self._locate(resource_id)
        arm = self._arm()
        from azure.core.exceptions import ResourceNotFoundError

        with _translated("VM deletion"):
            try:
                # Not awaited: the workflow or the reaper confirms the deletion (a 404).
                arm.compute.virtual_machines.begin_delete(group, name, polling=False)
            except ResourceNotFoundError:
                return CloudState.TERMINATED  # Resource Manager answers 204 or 404 for that
        return CloudState.TERMINATING

    def terminate_many(self, resource_ids: Collection[str], region: str) -> dict[str, CloudState]:
        # Resource Manager has no batch delete for VMs: one DELETE each.
        return {r: self.terminate(r, region) for r in dict.fromkeys(resource_ids)}

    def snapshot(
        self, region: str, resource_ids: Collection[str], include_managed: bool = True,
        power_wanted: Collection[str] = (),
    ) -> CloudSnapshot:
        """One listing of the resource group (paged): every VM in it, so a VM asked about and
        not listed is gone. The listing carries no power state (Resource Manager expands the
        instance view of a list only for a scale set), so a provisioned VM counts as running
        unless it is in `power_wanted`: each of those listed is read once more, with its
        instance view. Without `include_managed`, one such read of each VM asked about."""
        if not include_managed:
            return CloudSnapshot(managed=(), by_id=self._read_each(resource_ids))
        group = str(self._settings.resource_group)
        with _translated("VM listing"):
            vms = list(self._arm().compute.virtual_machines.list(group))
        listed = {str(vm.id).lower(): vm for vm in vms}
        present = {key: self._machine(vm) for key, vm in listed.items()}
        for resource_id in dict.fromkeys(r for r in power_wanted if r.lower() in listed):
            try:
                vm = self._get_vm(*self._locate(resource_id))
            except CloudProviderError:
                # As the listing saw it: one throttled read must not blind the whole look.
                logger.warning("could not read the power state of %s", resource_id)
                continue
            if vm is None:
                del present[resource_id.lower()]  # deleted since the listing: gone
            else:
                present[resource_id.lower()] = self._machine(vm)
        managed = tuple(
            present[key] for key, vm in listed.items() if key in present and self._is_managed(vm)
        )
        wanted = {r.lower(): r for r in resource_ids}
        found = {original: present[key] for key, original in wanted.items() if key in present}
        return CloudSnapshot(
            managed=managed, by_id={**{m.resource_id: m for m in managed}, **found}
        )

    def _read_each(self, resource_ids: Collection[str]) -> dict[str, CloudMachine]:
        """One read of each VM, with its instance view (power state included)."""
        by_id = {}
        for resource_id in dict.fromkeys(resource_ids):
            vm = self._get_vm(*self._locate(resource_id))
            if vm is not None:
                by_id[resource_id] = self._machine(vm)
        return by_id

    def _is_managed(self, vm: VirtualMachine) -> bool:
        tags = vm.tags or {}
        return tags.get(MANAGED_TAG) == "true" and tags.get(DEPLOYMENT_TAG) == self._deployment

    @staticmethod
    def _machine(vm: VirtualMachine) -> CloudMachine:
        properties = vm.properties
        provisioning = _text(properties.provisioning_state if properties else None).lower()
        state = {
            "deleting": CloudState.TERMINATING,
            "failed": CloudState.FAILED,
            "creating": CloudState.PENDING,
        }.get(provisioning, CloudState.RUNNING)
        instance_view = properties.instance_view if properties else None
        if state is CloudState.RUNNING and _power_state(instance_view) in _STOPPED_POWER_STATES:
            # Stopped or deallocated: Azure gives no time for it, so billing is not ended
            # from it (a stopped VM that is still allocated is billed).
            state = CloudState.STOPPED
        return CloudMachine(
            resource_id=str(vm.id),
            state=state,
            record_id=(vm.tags or {}).get(RECORD_ID_TAG),
            launched_at=as_utc(properties.time_created if properties else None),
        )

    # -- helpers ----------------------------------------------------------------------------

    def _arm(self) -> ArmClients:
        with self._lock:
            if self._clients is None:
                from chalicelib.providers import azure_arm

                self._clients = azure_arm.build_clients(
                    self._settings,
                    self._connection.credential,
                    self._connection.sleep,
                    self._connection.transport_options,
                )
            return self._clients

    def _locate(self, resource_id: str) -> tuple[str, str]:
        """(resource group, VM name) of a VM's ARM id; a bare name is in the configured group."""
        parts = resource_id.strip("/").split("/")
        if len(parts) == 8 and parts[2].lower() == "resourcegroups":
            return parts[3], parts[7]
        return str(self._settings.resource_group), resource_id

    def _get_vm(self, group: str, name: str) -> VirtualMachine | None:
        from azure.core.exceptions import ResourceNotFoundError

        with _translated("VM read"):
            try:
                return self._arm().compute.virtual_machines.get(group, name, expand="instanceView")
            except ResourceNotFoundError:
                return None  # the VM, or its whole resource group, is gone

    def _view(self, vm: VirtualMachine) -> CloudInstanceView:
        properties = vm.properties
        provisioning = _text(properties.provisioning_state if properties else None).lower()
        instance_view = properties.instance_view if properties else None
        statuses = list((instance_view.statuses if instance_view else None) or [])
        power = _power_state(instance_view)
        failure: CloudProviderError | None = None
        if provisioning == "deleting":
            state = CloudState.TERMINATING
        elif provisioning == "failed":
            state, failure = CloudState.FAILED, _provisioning_failure(statuses)
        elif power in _STOPPED_POWER_STATES:
            state = CloudState.STOPPED
        # An update of a running VM (provisioning Updating) does not stop it.
        elif power == "running" and provisioning in ("succeeded", "updating"):
            state = CloudState.RUNNING
        else:
            state = CloudState.PENDING
        running = state is CloudState.RUNNING
        detail = {"provisioningState": provisioning or "unknown"}
        if power:
            detail["powerState"] = power
        return CloudInstanceView(
            resource_id=str(vm.id),
            state=state,
            # Azure's own readiness: provisioned, running, and the guest agent reports Ready.
            checks_passed=running and provisioning == "succeeded" and _agent_ready(instance_view),
            private_ip=self._private_ip(vm) if running else None,
            public_ip=None,  # the service attaches no public IP: the subnet decides reachability
            detail=detail,
            failure=failure,
            launched_at=as_utc(properties.time_created if properties else None),
        )

    def _private_ip(self, vm: VirtualMachine) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        network_profile = vm.properties.network_profile if vm.properties else None
        references = list((network_profile.network_interfaces if network_profile else None) or [])
        if not references:
            return None
        reference = next(
            (r for r in references if r.properties and r.properties.primary), references[0]
        )
        group, name = self._locate(str(reference.id))  # same shape as a VM id
        with _translated("network interface read"):
            try:
                nic = self._arm().network.network_interfaces.get(group, name)
            except ResourceNotFoundError:
                return None
        configs = list((nic.properties.ip_configurations if nic.properties else None) or [])
        primary = next(
            (c for c in configs if c.properties and c.properties.primary),
            configs[0] if configs else None,
        )
        if primary is None or primary.properties is None:
            return None
        return primary.properties.private_ip_address

    def _delete_nic_quietly(self, group: str, nic_name: str) -> None:
        try:
            with _translated("network interface deletion"):
                self._arm().network.network_interfaces.begin_delete(
                    group, nic_name, polling=False
                )
        except CloudProviderError:
            logger.warning("could not delete network interface %s; it is unused", nic_name)

