"""What a cloud says of the machines it runs, in words common to every provider."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class CloudState(StrEnum):
    PENDING = "pending"  # accepted, not yet running
    RUNNING = "running"
    STOPPED = "stopped"  # exists but is powered off
    TERMINATING = "terminating"  # deletion accepted, not yet gone (no longer billed)
    TERMINATED = "terminated"  # gone, or never existed
    FAILED = "failed"  # the cloud gave up on it

    @property
    def is_present(self) -> bool:
        """The machine exists and may be billed: a terminate is still owed to it."""
        return self not in (CloudState.TERMINATING, CloudState.TERMINATED)


@dataclass(frozen=True)
class CloudMachine:
    """One machine as a cloud listing reports it."""

    resource_id: str
    state: CloudState
    # The record id the machine is tagged with; None for a managed machine without one.
    record_id: str | None = None
    # When the cloud accepted its launch (EC2 LaunchTime, Azure timeCreated).
    launched_at: datetime | None = None
    # When it went, if the cloud says (EC2's "User initiated (... GMT)" transition reason).
    gone_at: datetime | None = None
    # A STOPPED machine the cloud no longer bills: since when, if the cloud says so (a stopped
    # EC2 instance, from its transition reason). None while it is billed (an Azure VM stopped
    # but still allocated) or when the cloud gives no time.
    unbilled_since: datetime | None = None


@dataclass(frozen=True)
class CloudSnapshot:
    """One look at a provider's region: the machines this deployment manages (tagged
    `provisioner:managed=true` and with this deployment's name), and, by resource id, every
    machine asked about that still exists. A resource id missing from `by_id` is gone."""

    managed: tuple[CloudMachine, ...]
    by_id: dict[str, CloudMachine]

    def state_of(self, resource_id: str) -> CloudMachine | None:
        return self.by_id.get(resource_id)
