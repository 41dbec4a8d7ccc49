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

# Every live status may end in ERROR, and in TERMINATED when the cloud reports the machine
# gone (terminated outside the service: in a console, or reclaimed by the cloud).
_ENDS = {InstanceStatus.STOPPING, InstanceStatus.TERMINATED, InstanceStatus.ERROR}
ALLOWED_TRANSITIONS: dict[InstanceStatus, frozenset[InstanceStatus]] = {
    InstanceStatus.PROVISIONING: frozenset({InstanceStatus.CONFIGURING, *_ENDS}),
    InstanceStatus.CONFIGURING: frozenset({InstanceStatus.READY, *_ENDS}),
    InstanceStatus.READY: frozenset({InstanceStatus.RUNNING, *_ENDS}),
    InstanceStatus.RUNNING: frozenset({InstanceStatus.READY, *_ENDS}),
    InstanceStatus.STOPPING: frozenset({InstanceStatus.TERMINATED, InstanceStatus.ERROR}),
    InstanceStatus.TERMINATED: frozenset(),
    InstanceStatus.ERROR: frozenset(),
}


def check_transition(current: InstanceStatus, target: InstanceStatus) -> None:
    """Raise InvalidTransitionError unless the lifecycle allows current -> target."""
    if target not in ALLOWED_TRANSITIONS[current]:
        allowed = [str(s) for s in sorted(ALLOWED_TRANSITIONS[current])] or [
            "none: the instance is finished"
        ]
        raise InvalidTransitionError(
            f"An instance in {current} cannot move to {target}; allowed: {', '.join(allowed)}."
        )
