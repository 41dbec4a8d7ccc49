"""Lifecycle states of an instance and the transitions between them."""

from __future__ import annotations

from enum import StrEnum

from chalicelib.domain.errors import InvalidTransitionError


class InstanceStatus(StrEnum):
    PROVISIONING = "PROVISIONING"
    CONFIGURING = "CONFIGURING"
    READY = "READY"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_live(self) -> bool:
        return not self.is_terminal


TERMINAL_STATUSES = frozenset({InstanceStatus.TERMINATED, InstanceStatus.ERROR})
LIVE_STATUSES = tuple(s for s in InstanceStatus if s not in TERMINAL_STATUSES)
# States in which the instance is booted and may be used; its idle clock runs.
IN_SERVICE_STATUSES = frozenset({InstanceStatus.READY, InstanceStatus.RUNNING})

ALLOWED_TRANSITIONS: dict[InstanceStatus, frozenset[InstanceStatus]] = {
    InstanceStatus.PROVISIONING: frozenset(
        {InstanceStatus.CONFIGURING, InstanceStatus.STOPPING, InstanceStatus.ERROR}
    ),
    InstanceStatus.CONFIGURING: frozenset(
        {InstanceStatus.READY, InstanceStatus.STOPPING, InstanceStatus.ERROR}
    ),
    InstanceStatus.READY: frozenset(
        {InstanceStatus.RUNNING, InstanceStatus.STOPPING, InstanceStatus.ERROR}
    ),
    InstanceStatus.RUNNING: frozenset(
        {InstanceStatus.READY, InstanceStatus.STOPPING, InstanceStatus.ERROR}
    ),
    InstanceStatus.STOPPING: frozenset({InstanceStatus.TERMINATED, InstanceStatus.ERROR}),
    InstanceStatus.TERMINATED: frozenset(),
    InstanceStatus.ERROR: frozenset(),
}


def check_transition(current: InstanceStatus, target: InstanceStatus) -> None:
    """Raise InvalidTransitionError unless the lifecycle allows current -> target."""
    if target not in ALLOWED_TRANSITIONS[current]:
        allowed = sorted(ALLOWED_TRANSITIONS[current]) or ["none: the instance is finished"]
        raise InvalidTransitionError(
            f"An instance in {current} cannot move to {target}; allowed: {', '.join(allowed)}."
        )
