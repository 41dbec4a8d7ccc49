"""The release workflow's step (ReleaseSteps, through the Reconciler) on in-memory twins:
terminate at once, finish when the cloud confirms, and the race of that confirmation."""

from __future__ import annotations

from dataclasses import replace

from chalicelib.domain.cloud import CloudState
from chalicelib.domain.reconcile import Action, Decision, Plan
from chalicelib.domain.states import InstanceStatus
from chalicelib.providers.base import CloudThrottlingError
from chalicelib.services.reconciler import Reconciler
from tests.unit.services.conftest import ALICE


def release_state(world, instance, attempt: int = 0) -> dict:
    return {**world.release_workflow.started[f"{instance.id}-release"], "attempt": attempt}


def test_release_terminates_at_once_and_finishes_when_the_cloud_confirms(world):
    ready = world.ready()
    world.clock.advance(minutes=30)
    world.instances.terminate(ALICE, ready.id)

    first = world.release.release(release_state(world, ready))
    going = world.repository.stored(ready.id)
    world.cloud.gone(ready.cloud_resource_id)
    world.clock.advance(seconds=20)
    second = world.release.release({**first})

    assert (first["released"], first["handedToReaper"]) == (False, False)
    assert going.status is InstanceStatus.STOPPING
    assert going.billing_ended_at == going.terminate_requested_at  # billed until the ask
    assert second["released"] is True
    finished = world.repository.stored(ready.id)
    assert finished.status is InstanceStatus.TERMINATED
    assert finished.billing_ended_at == going.billing_ended_at
    assert world.events.detail_types()[-1] == "Instance Terminated"


def test_a_write_racing_the_confirmation_is_decided_again_on_the_next_check(world):
    """The race of confirm: a heartbeat lands between the release's read of the record and
    its write of TERMINATED; the release loses, leaves the fresh record, and the next check
    finishes it."""
    ready = world.ready()
    world.instances.terminate(ALICE, ready.id)
    first = world.release.release(release_state(world, ready))
    world.cloud.gone(ready.cloud_resource_id)

    def heartbeat_lands(_):
        current = world.repository.stored(ready.id)
        world.repository.write_behind_the_back(replace(current, updated_at=world.clock()))

    world.repository.before_save = heartbeat_lands
    raced = world.release.release(first)
    assert raced["released"] is False
    assert world.status_of(ready) is InstanceStatus.STOPPING

    confirmed = world.release.release(raced)
    assert confirmed["released"] is True
    assert world.status_of(ready) is InstanceStatus.TERMINATED


def test_checks_used_up_hand_the_release_to_the_reapers_tick(world):
    ready = world.ready()
    world.instances.terminate(ALICE, ready.id)
    world.cloud.failures.fail("terminate", CloudThrottlingError("slow down"), times=5)

    state = world.release.release(release_state(world, ready))
    state = world.release.release(state)

    assert state["handedToReaper"] is True and state["released"] is False
    assert world.cloud.machine_for(ready.id).state is CloudState.RUNNING


def test_a_stop_before_any_machine_was_recorded_finishes_by_the_tag_lookup(world):
    instance = world.provision()
    world.instances.terminate(ALICE, instance.id)

    state = world.release.release(release_state(world, instance))

    assert state["released"] is True
    assert world.status_of(instance) is InstanceStatus.TERMINATED


def test_the_reconciler_counts_a_lost_stop_as_a_race_not_a_failure(world):
    ready = world.ready()
    world.clock.advance(minutes=ready.idle_timeout_minutes + 1)
    stale = world.repository.stored(ready.id)
    world.repository.write_behind_the_back(replace(stale, updated_at=world.clock()))

    outcome = Reconciler(world.lifecycle, world.policy).apply(
        Plan(decisions=[Decision(stale, Action.STOP, reason="idle_timeout")]), world.clock()
    )

    assert outcome.races == 1 and not outcome.failures
    assert world.status_of(ready) is InstanceStatus.READY
    assert world.cloud.machine_for(ready.id).state is CloudState.RUNNING
