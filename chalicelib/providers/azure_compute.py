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
from typing import Any

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

    credential: Any = None
    transport_options: Mapping[str, Any] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep


def resource_names(record_id: str) -> tuple[str, str]:
    """The VM's and the NIC's names for a record: the same on every retry of its launch."""
    base = record_id
    if not _SAFE_NAME.match(record_id):
        base = "rec-" + hashlib.sha256(record_id.encode()).hexdigest()[:40]
    return base, f"{base}-nic"


def _text(value: Any) -> str:
    """An SDK field as plain text (some are str enums, whose str() is the member's name)."""
    return str(getattr(value, "value", value) or "")


def _error_code(exc: Any) -> str | None:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code and code.lower() in _ERRORS_BY_CODE:
        return str(code)
    # ARM sometimes wraps the telling code in the details of a generic one.
    for detail in getattr(error, "details", None) or []:
        detail_code = getattr(detail, "code", None)
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
            message = getattr(getattr(exc, "error", None), "message", None) or exc.reason
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


def _provisioning_failure(statuses: list[Any]) -> CloudProviderError:
    """The error Azure recorded on a VM whose provisioning failed after it was accepted:
    a status `ProvisioningState/failed/<Code>` with the message, in the instance view."""
    for status in statuses:
        code = _text(getattr(status, "code", None))
        if code.lower().startswith("provisioningstate/failed"):
            cloud_code = code.split("/", 2)[2] if code.count("/") >= 2 else "ProvisioningFailed"
            message = getattr(status, "message", None) or getattr(status, "display_status", "")
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


def _agent_ready(instance_view: Any) -> bool:
    agent = getattr(instance_view, "vm_agent", None)
    return any(
        _text(getattr(status, "display_status", None)).lower() == "ready"
        for status in (getattr(agent, "statuses", None) or [])
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
        self._clients: Any = None
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
        nic_state = _text(nic.provisioning_state) or "unknown"
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
        self, region: str, resource_ids: Collection[str], include_managed: bool = True
    ) -> CloudSnapshot:
        """One listing of the resource group (paged): every VM in it, so a VM asked about and
        not listed is gone. The listing carries no power state (Resource Manager expands the
        instance view of a list only for a scale set), so a provisioned VM counts as running:
        present and billed, which is all the reconciler needs to know. Without
        `include_managed`, one read of each VM asked about instead."""
        if not include_managed:
            by_id = {}
            for resource_id in dict.fromkeys(resource_ids):
                vm = self._get_vm(*self._locate(resource_id))
                if vm is not None:
                    by_id[resource_id] = self._machine(vm)
            return CloudSnapshot(managed=(), by_id=by_id)
        group = str(self._settings.resource_group)
        with _translated("VM listing"):
            vms = list(self._arm().compute.virtual_machines.list(group))
        machines = [self._machine(vm) for vm in vms]
        managed = tuple(m for m, vm in zip(machines, vms, strict=True) if self._is_managed(vm))
        by_id = {m.resource_id.lower(): m for m in machines}
        wanted = {r.lower(): r for r in resource_ids}
        found = {original: by_id[key] for key, original in wanted.items() if key in by_id}
        listed = {m.resource_id: m for m in managed}
        return CloudSnapshot(managed=managed, by_id={**listed, **found})

    def _is_managed(self, vm: Any) -> bool:
        tags = dict(getattr(vm, "tags", None) or {})
        return tags.get(MANAGED_TAG) == "true" and tags.get(DEPLOYMENT_TAG) == self._deployment

    @staticmethod
    def _machine(vm: Any) -> CloudMachine:
        provisioning = _text(vm.provisioning_state).lower()
        state = {
            "deleting": CloudState.TERMINATING,
            "failed": CloudState.FAILED,
            "creating": CloudState.PENDING,
        }.get(provisioning, CloudState.RUNNING)
        return CloudMachine(
            resource_id=str(vm.id),
            state=state,
            record_id=dict(getattr(vm, "tags", None) or {}).get(RECORD_ID_TAG),
            launched_at=as_utc(getattr(vm, "time_created", None)),
        )

    # -- helpers ----------------------------------------------------------------------------

    def _arm(self) -> Any:
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

    def _get_vm(self, group: str, name: str) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        with _translated("VM read"):
            try:
                return self._arm().compute.virtual_machines.get(group, name, expand="instanceView")
            except ResourceNotFoundError:
                return None  # the VM, or its whole resource group, is gone

    def _view(self, vm: Any) -> CloudInstanceView:
        provisioning = _text(vm.provisioning_state).lower()
        instance_view = vm.instance_view
        statuses = list(getattr(instance_view, "statuses", None) or [])
        power = next(
            (
                _text(s.code).split("/", 1)[1].lower()
                for s in statuses
                if _text(getattr(s, "code", None)).startswith("PowerState/")
            ),
            None,
        )
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
            launched_at=as_utc(getattr(vm, "time_created", None)),
        )

    def _private_ip(self, vm: Any) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        references = list(getattr(vm.network_profile, "network_interfaces", None) or [])
        if not references:
            return None
        reference = next((r for r in references if r.primary), references[0])
        group, name = self._locate(str(reference.id))  # same shape as a VM id
        with _translated("network interface read"):
            try:
                nic = self._arm().network.network_interfaces.get(group, name)
            except ResourceNotFoundError:
                return None
        configs = list(nic.ip_configurations or [])
        primary = next((c for c in configs if c.primary), configs[0] if configs else None)
        return primary.private_ip_address if primary is not None else None

    def _delete_nic_quietly(self, group: str, nic_name: str) -> None:
        try:
            with _translated("network interface deletion"):
                self._arm().network.network_interfaces.begin_delete(
                    group, nic_name, polling=False
                )
        except CloudProviderError:
            logger.warning("could not delete network interface %s; it is unused", nic_name)

