"""The provider-neutral interface to a cloud, and the errors every adapter raises."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

# Re-exported: the adapters speak the domain's words for what a cloud reports.
from chalicelib.domain.cloud import CloudMachine as CloudMachine
from chalicelib.domain.cloud import CloudSnapshot as CloudSnapshot
from chalicelib.domain.cloud import CloudState as CloudState
from chalicelib.domain.errors import DomainError

# Tags every provider puts on what it creates, so a machine can be traced to its record.
# Only machines carrying MANAGED_TAG=true and this deployment's DEPLOYMENT_TAG are ever touched
# by the reconciler; anything else in the account is left alone, whatever else it carries.
MANAGED_TAG = "provisioner:managed"
DEPLOYMENT_TAG = "provisioner:deployment"
RECORD_ID_TAG = "provisioner:record-id"
USER_ID_TAG = "provisioner:user-id"
TASK_ID_TAG = "provisioner:task-id"


@dataclass(frozen=True)
class LaunchRequest:
    record_id: str
    user_id: str
    task_id: str | None
    instance_type: str
    region: str
    # The cloud-init document that installs and starts the agent (EC2 UserData, Azure
    # customData); it carries the instance's agent secret.
    user_data: str | None = None


@dataclass(frozen=True)
class CloudInstanceView:
    resource_id: str
    state: CloudState
    # True once the provider's own health checks report the machine reachable and well.
    checks_passed: bool = False
    private_ip: str | None = None
    public_ip: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
    # When the cloud accepted the launch (EC2 LaunchTime, Azure timeCreated), if it says.
    launched_at: datetime | None = None
    # Why the cloud gave up on the machine (state FAILED), as the error its code maps to, for
    # a cloud that reports a launch failure after accepting the launch (Azure's async errors).
    failure: CloudProviderError | None = None


class CloudProvider(Protocol):
    name: str

    def launch(self, request: LaunchRequest) -> CloudInstanceView:
        """Start a machine for the record, or return the one already started for it."""
        ...

    def describe(self, resource_id: str, region: str) -> CloudInstanceView:
        """The machine's state; TERMINATED when the cloud no longer knows it."""
        ...

    def find_for_record(self, record_id: str, region: str) -> CloudInstanceView | None:
        """The live machine tagged with the record id, if the cloud has one."""
        ...

    def terminate(self, resource_id: str, region: str) -> CloudState:
        """Ask the cloud to delete the machine; a machine already gone is not an error.
        Returns the state the cloud reports for it on accepting (TERMINATING or TERMINATED
        when the deletion is under way)."""
        ...

    def terminate_many(self, resource_ids: Collection[str], region: str) -> dict[str, CloudState]:
        """`terminate` for many machines in as few calls as the cloud allows."""
        ...

    def snapshot(
        self, region: str, resource_ids: Collection[str], include_managed: bool = True,
        power_wanted: Collection[str] = (),
    ) -> CloudSnapshot:
        """This deployment's managed machines in `region` (unless `include_managed` is off),
        and the state of each machine of `resource_ids` that still exists, in as few calls as
        the cloud allows. A machine of `power_wanted` is reported STOPPED if it is powered
        off, even where the cloud's listing does not say (it is then read on its own)."""
        ...


class CloudProviderError(DomainError):
    """Base of the errors a cloud adapter raises; `cloud_code` is the cloud's own error code."""

    code = "cloud_error"

    def __init__(self, message: str, cloud_code: str | None = None) -> None:
        super().__init__(message)
        self.cloud_code = cloud_code


class CloudThrottlingError(CloudProviderError):
    """The cloud asked us to slow down; the same call may succeed later."""

    code = "cloud_throttled"


class CloudCapacityError(CloudProviderError):
    """The cloud has no capacity or quota for this machine now."""

    code = "cloud_capacity"


class CloudConfigurationError(CloudProviderError):
    """The request was refused because of our settings (AMI, subnet, permissions...)."""

    code = "cloud_configuration"


class CloudLaunchFailedError(CloudProviderError):
    """The machine was accepted but the cloud reports it failed or vanished while starting."""

    code = "cloud_launch_failed"


def as_utc(moment: object) -> datetime | None:
    """A time an SDK reports (a datetime, naive or not, or ISO 8601 text) in UTC; None if absent."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
