"""InstanceService (provision, stop, limits, activity) on in-memory twins, races included."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chalicelib.domain.errors import (
    ConcurrentUpdateError,
    InstanceNotFoundError,
    InvalidTransitionError,
    ValidationError,
)
from chalicelib.domain.identity import Caller
from chalicelib.domain.states import InstanceStatus
from chalicelib.services.instances import WorkflowStartError
from tests.unit.services.conftest import ALICE

BOB = Caller("bob")


def test_provision_stores_announces_and_starts_the_workflow_named_after_the_record(world):
    instance = world.provision(task_id="task-1")

    stored = world.repository.stored(instance.id)
    assert stored.status is InstanceStatus.PROVISIONING
    assert stored.execution_id == world.workflow.execution_id(instance.id)
    assert world.workflow.started[instance.id] == {
        "instanceId": instance.id, "pollSeconds": 0, "maxChecks": 3,
        "agentTimeoutSeconds": 900,
    }
    assert world.events.detail_types() == ["Instance Provisioning"]


def test_a_workflow_that_cannot_start_leaves_the_record_in_error(world):
    world.workflow.failures.fail("start", RuntimeError("Step Functions is down"))

    with pytest.raises(WorkflowStartError):
        world.provision()

    [record] = list(world.repository.all_for_stats("alice"))
    assert record.status is InstanceStatus.ERROR
    assert record.status_reason == "workflow_start_failed"
    assert world.cloud.machines == {}
    assert world.events.detail_types() == ["Instance Provisioning", "Instance Error"]


def test_a_lost_event_does_not_undo_the_provision(world):
    world.events.failures.fail("publish", RuntimeError("bus refused"))

    instance = world.provision()

    assert world.status_of(instance) is InstanceStatus.PROVISIONING
    assert instance.id in world.workflow.started


def test_someone_elses_instance_answers_like_a_missing_one(world):
    instance = world.provision()

    with pytest.raises(InstanceNotFoundError):
        world.instances.get(BOB, instance.id)
    with pytest.raises(InstanceNotFoundError):
        world.instances.terminate(BOB, instance.id)
    assert world.instances.get(Caller("ops", is_admin=True), instance.id).id == instance.id


def test_stop_moves_to_stopping_and_hands_the_release_to_its_workflow(world):
    instance = world.provision()

    stopped = world.instances.terminate(ALICE, instance.id)
    again = world.instances.terminate(ALICE, instance.id)

    assert stopped.status is InstanceStatus.STOPPING
    assert stopped.status_reason == "user_request"
    assert again == stopped  # a repeated DELETE changes nothing
    assert list(world.release_workflow.started) == [f"{instance.id}-release"]


def test_stop_racing_the_workflow_rereads_and_stops_the_fresh_record(world):
    """The workflow moves the record to CONFIGURING between the stop's read and its write."""
    instance = world.provision()

    def workflow_moves_on(_):
        current = world.repository.stored(instance.id)
        world.repository.write_behind_the_back(
            current.transition(InstanceStatus.CONFIGURING, world.clock())
        )

    world.repository.before_save = workflow_moves_on
    stopped = world.instances.terminate(ALICE, instance.id)

    assert stopped.status is InstanceStatus.STOPPING
    assert [c.status for c in stopped.status_history] == [
        InstanceStatus.PROVISIONING, InstanceStatus.CONFIGURING, InstanceStatus.STOPPING,
    ]
    assert list(world.release_workflow.started) == [f"{instance.id}-release"]


def test_stop_racing_another_stop_keeps_the_first_and_still_hands_off_once(world):
    instance = world.provision()

    def reaper_stops_it(_):
        current = world.repository.stored(instance.id)
        world.repository.write_behind_the_back(
            current.transition(InstanceStatus.STOPPING, world.clock(), "idle_timeout")
        )

    world.repository.before_save = reaper_stops_it
    stopped = world.instances.terminate(ALICE, instance.id)

    assert stopped.status is InstanceStatus.STOPPING
    assert stopped.status_reason == "idle_timeout"
    assert [c.status for c in stopped.status_history].count(InstanceStatus.STOPPING) == 1
    assert list(world.release_workflow.started) == [f"{instance.id}-release"]


def test_a_stop_that_loses_every_race_gives_up_with_the_conflict(world):
    instance = world.provision()

    def always_first(_):
        current = world.repository.stored(instance.id)
        world.repository.write_behind_the_back(replace(current, updated_at=world.clock()))
        world.repository.before_save = always_first

    world.repository.before_save = always_first
    with pytest.raises(ConcurrentUpdateError):
        world.instances.terminate(ALICE, instance.id)
    world.repository.before_save = None
    assert world.status_of(instance) is InstanceStatus.PROVISIONING
    assert world.release_workflow.started == {}


def test_a_release_workflow_that_cannot_start_leaves_the_stop_recorded(world):
    instance = world.provision()
    world.release_workflow.failures.fail("start", RuntimeError("throttled"))

    stopped = world.instances.terminate(ALICE, instance.id)

    assert stopped.status is InstanceStatus.STOPPING
    assert world.status_of(instance) is InstanceStatus.STOPPING  # the tick is the net


def test_limits_change_on_a_live_instance_never_below_the_time_lived(world):
    instance = world.provision()
    world.clock.advance(minutes=90)

    with pytest.raises(ValidationError) as refused:
        world.instances.update_limits(ALICE, instance.id, None, 60)
    changed = world.instances.update_limits(ALICE, instance.id, 45, 120)

    assert "at least 90" in str(refused.value)
    assert (changed.idle_timeout_minutes, changed.max_lifetime_minutes) == (45, 120)
    with pytest.raises(ValidationError):
        world.instances.update_limits(ALICE, instance.id, None, None)
    world.instances.terminate(ALICE, instance.id)
    with pytest.raises(InvalidTransitionError):
        world.instances.update_limits(ALICE, instance.id, 50, None)


def test_activity_moves_ready_to_running_and_a_heartbeat_restarts_the_idle_clock(world):
    ready = world.ready()
    world.clock.advance(minutes=5)

    running = world.instances.report_activity(ALICE, ready.id, "running")
    world.clock.advance(minutes=5)
    beat = world.instances.report_activity(ALICE, ready.id, "running")

    assert running.status is InstanceStatus.RUNNING
    assert running.last_evidence_source == "client"
    assert beat.status is InstanceStatus.RUNNING
    assert beat.last_activity_at == world.clock()
    provisioning = world.provision()
    with pytest.raises(InvalidTransitionError):
        world.instances.report_activity(ALICE, provisioning.id, "running")


def test_stats_count_only_the_callers_instances(world):
    world.provision()
    world.provision(BOB)

    assert world.instances.stats(ALICE).total == 1
    assert world.instances.stats(Caller("ops", is_admin=True)).total == 2
