"""The lifecycle events the service announces, keyed by the status that triggers them."""

from __future__ import annotations

from chalicelib.domain.states import InstanceStatus

EVENT_SOURCE = "instance-provisioner"

DETAIL_TYPE_BY_STATUS: dict[InstanceStatus, str] = {
    InstanceStatus.PROVISIONING: "Instance Provisioning",
    InstanceStatus.READY: "Instance Ready",
    InstanceStatus.TERMINATED: "Instance Terminated",
    InstanceStatus.ERROR: "Instance Error",
}
