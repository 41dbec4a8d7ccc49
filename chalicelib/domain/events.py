"""The lifecycle events the service announces, keyed by the status that triggers them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.domain.states import InstanceStatus

EVENT_SOURCE = "instance-provisioner"

ORPHAN_TERMINATED = "Instance Orphan Terminated"
INSTANCE_STUCK = "Instance Stuck"
INSTANCE_EXPIRING = "Instance Expiring"
# A user's month-to-date spend reached 80% of their monthly budget (once per user and month).
BUDGET_WARNING = "Budget Warning"


@dataclass(frozen=True)
class Event:
    """One lifecycle event: its EventBridge detail-type and its JSON detail."""

    detail_type: str
    detail: dict[str, Any]


DETAIL_TYPE_BY_STATUS: dict[InstanceStatus, str] = {
    InstanceStatus.PROVISIONING: "Instance Provisioning",
    InstanceStatus.READY: "Instance Ready",
    InstanceStatus.TERMINATED: "Instance Terminated",
    InstanceStatus.ERROR: "Instance Error",
}
