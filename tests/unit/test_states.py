"""The instance lifecycle: which states exist and which moves between them are allowed."""

from __future__ import annotations

import pytest

from chalicelib.domain.errors import InvalidTransitionError
from chalicelib.domain.states import (
    IN_SERVICE_STATUSES,
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    InstanceStatus,
    check_transition,
)

S = InstanceStatus

# The lifecycle written out by hand: every move not listed here must be refused. Any live
# status may end TERMINATED directly when the cloud reports its machine gone.
EXPECTED_MOVES = {
    S.PROVISIONING: {S.CONFIGURING, S.STOPPING, S.TERMINATED, S.ERROR},
    S.CONFIGURING: {S.READY, S.STOPPING, S.TERMINATED, S.ERROR},
    S.READY: {S.RUNNING, S.STOPPING, S.TERMINATED, S.ERROR},
    S.RUNNING: {S.READY, S.STOPPING, S.TERMINATED, S.ERROR},
    S.STOPPING: {S.TERMINATED, S.ERROR},
    S.TERMINATED: set(),
    S.ERROR: set(),
}
ALL_PAIRS = [(current, target) for current in S for target in S]


@pytest.mark.parametrize(
    ("current", "target"), [p for p in ALL_PAIRS if p[1] in EXPECTED_MOVES[p[0]]]
)
def test_lifecycle_allows_each_documented_move(current, target):
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"), [p for p in ALL_PAIRS if p[1] not in EXPECTED_MOVES[p[0]]]
)
def test_lifecycle_refuses_every_undocumented_move(current, target):
    with pytest.raises(InvalidTransitionError):
        check_transition(current, target)


@pytest.mark.parametrize("target", list(S))
def test_terminated_instance_cannot_be_restarted(target):
    with pytest.raises(InvalidTransitionError, match="none: the instance is finished"):
        check_transition(S.TERMINATED, target)


def test_a_refused_move_names_the_moves_that_are_allowed():
    with pytest.raises(InvalidTransitionError) as refused:
        check_transition(S.READY, S.CONFIGURING)
    assert str(refused.value) == (
        "An instance in READY cannot move to CONFIGURING; allowed: ERROR, RUNNING, STOPPING, "
        "TERMINATED."
    )


def test_only_terminated_and_error_are_terminal():
    assert set(TERMINAL_STATUSES) == {S.TERMINATED, S.ERROR}
    assert [s for s in S if s.is_terminal] == [S.TERMINATED, S.ERROR]
    assert [s for s in S if s.is_live] == [
        S.PROVISIONING, S.CONFIGURING, S.READY, S.RUNNING, S.STOPPING,
    ]


def test_live_statuses_are_listed_in_lifecycle_order():
    assert LIVE_STATUSES == (S.PROVISIONING, S.CONFIGURING, S.READY, S.RUNNING, S.STOPPING)


def test_only_ready_and_running_instances_are_in_service():
    assert set(IN_SERVICE_STATUSES) == {S.READY, S.RUNNING}


def test_only_provisioning_configuring_and_stopping_can_be_stuck():
    from chalicelib.domain.instance import LifecyclePolicy

    limited = {status for status in S if LifecyclePolicy().limit_for(status) is not None}
    assert limited == {S.PROVISIONING, S.CONFIGURING, S.STOPPING}


def test_status_values_are_their_upper_case_names():
    assert [s.value for s in S] == [
        "PROVISIONING", "CONFIGURING", "READY", "RUNNING", "STOPPING", "TERMINATED", "ERROR",
    ]
