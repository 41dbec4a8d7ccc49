"""The provider-neutral interface to a cloud, and the errors every adapter raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from chalicelib.domain.errors import DomainError

# Tags every provider puts on what it creates, so a machine can be traced to its record.
MANAGED_TAG = "provisioner:managed"
RECORD_ID_TAG = "provisioner:record-id"
USER_ID_TAG = "provisioner:user-id"
TASK_ID_TAG = "provisioner:task-id"


class CloudState(StrEnum):
    """What the cloud says of a machine, in words common to every provider."""

    PENDING = "pending"  # accepted, not yet running
    RUNNING = "running"
    STOPPED = "stopped"  # exists but is powered off
    TERMINATING = "terminating"  # deletion accepted, not yet gone
    TERMINATED = "terminated"  # gone, or never existed
    FAILED = "failed"  # the cloud gave up on it


@dataclass(frozen=True)
class LaunchRequest:
    record_id: str
    user_id: str
    task_id: str | None
    instance_type: str
    region: str


@dataclass(frozen=True)
class CloudInstanceView:
    resource_id: str
    state: CloudState
    # True once the provider's own health checks report the machine reachable and well.
    checks_passed: bool = False
    private_ip: str | None = None
    public_ip: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
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

    def terminate(self, resource_id: str, region: str) -> None:
        """Ask the cloud to delete the machine; a machine already gone is not an error."""
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
