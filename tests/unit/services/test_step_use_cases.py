"""The lifecycle workflow's steps (LifecycleSteps) on in-memory twins: launch, its races with
a stop, the checks, the agent's word and the Catch target."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chalicelib.domain.cloud import CloudState
from chalicelib.domain.errors import ConcurrentUpdateError
from chalicelib.domain.states import InstanceStatus
from chalicelib.providers.base import CloudCapacityError, CloudLaunchFailedError
from chalicelib.services.steps import AgentTimeoutError, CloudNotReadyError, GpuCheckFailedError
from tests.unit.services.conftest import ALICE


def test_launch_stores_the_secret_hash_first_then_the_machine_and_its_launch_time(world):
    instance = world.provision()

    state = world.steps.launch(world.state(instance))

    launched = world.repository.stored(instance.id)
    machine = world.cloud.machine_for(instance.id)
    assert machine is not None and launched.cloud_resource_id == machine.resource_id
    assert launched.launched_at == machine.launched_at == world.clock()
    assert launched.agent_secret_hash is not None
    assert world.secret_of(launched)  # the agent finds its secret in the user data
    # The hash was written before the machine was asked for.
    assert world.repository.saves[0].agent_secret_hash == launched.agent_secret_hash
    assert world.repository.saves[0].cloud_resource_id is None
    assert state["stopped"] is False


def test_a_retried_launch_finds_the_machine_by_its_record_and_launches_no_second(world):
    instance, state = world.launched()

    again = world.steps.launch(world.state(instance))

    assert len(world.cloud.machines) == 1
    assert again["stopped"] is False
    assert world.repository.stored(instance.id).cloud_resource_id == instance.cloud_resource_id


def test_a_stop_landing_during_the_launch_releases_the_machine_and_bills_the_record(world):
    """The race of launch: the user's DELETE is written between the launch's read of the
    record and its write of the machine's id."""
    instance = world.provision()
    world.cloud.on_launch = lambda _: world.instances.terminate(ALICE, instance.id)

    state = world.steps.launch(world.state(instance))

    record = world.repository.stored(instance.id)
    [machine] = world.cloud.machines.values()
    assert state["stopped"] is True
    assert machine.state is CloudState.TERMINATING  # the machine does not outlive its record
    assert record.status is InstanceStatus.STOPPING
    assert record.cloud_resource_id == machine.resource_id
    assert record.billing_ended_at == world.clock()
    assert record.terminate_requested_at == world.clock()


def test_the_stops_own_release_writing_meanwhile_is_waited_out(world):
    """After the launch lost to a stop, the stop's release writes the record too: the launch
    reads again and retries its own release until it lands."""
    instance = world.provision()

    def release_writes_too(_):
        current = world.repository.stored(instance.id)
        world.repository.write_behind_the_back(replace(current, terminate_attempts=1))

    def then_the_launch_save(_):  # fails (STOPPING); the next save is the launch's release
        world.repository.before_save = release_writes_too

    def stop_during_launch(_):
        world.instances.terminate(ALICE, instance.id)
        world.repository.before_save = then_the_launch_save

    world.cloud.on_launch = stop_during_launch
    state = world.steps.launch(world.state(instance))

    record = world.repository.stored(instance.id)
    assert state["stopped"] is True
    # The release's write was kept, and the launch's own terminate request counted on it.
    assert record.terminate_attempts == 2
    assert record.cloud_resource_id == world.cloud.machine_for(instance.id).resource_id
    assert not world.cloud.machine_for(instance.id).state.is_present


def test_an_unrelated_write_during_the_launch_makes_the_step_fail_for_its_retry(world):
    instance = world.provision()

    def limits_change(_):
        current = world.repository.stored(instance.id)
        world.repository.write_behind_the_back(replace(current, idle_timeout_minutes=45))

    world.cloud.on_launch = limits_change
    with pytest.raises(ConcurrentUpdateError):
        world.steps.launch(world.state(instance))

    world.steps.launch(world.state(instance))  # the workflow's Retry
    record = world.repository.stored(instance.id)
    assert len(world.cloud.machines) == 1
    assert record.idle_timeout_minutes == 45
    assert record.cloud_resource_id == world.cloud.machine_for(instance.id).resource_id


def test_a_launch_after_the_record_finished_releases_any_machine_by_its_tag(world):
    instance, _ = world.launched()
    finished = world.repository.write_behind_the_back(
        replace(world.repository.stored(instance.id), cloud_resource_id=None).transition(
            InstanceStatus.ERROR, world.clock(), "test"
        )
    )

    state = world.steps.launch(world.state(finished))

    assert state["stopped"] is True
    assert not world.cloud.machine_for(instance.id).state.is_present


def test_a_refused_launch_raises_the_clouds_error_for_the_catch(world):
    instance = world.provision()
    world.cloud.failures.fail("launch", CloudCapacityError("no capacity (InsufficientCapacity)"))

    with pytest.raises(CloudCapacityError):
        world.steps.launch(world.state(instance))


def test_check_running_waits_its_checks_then_gives_up(world):
    instance, state = world.launched()

    state = world.steps.check_running(state)
    assert state["attempt"] == 1 and state["running"] is False
    state = world.steps.check_running(state)
    with pytest.raises(CloudNotReadyError):
        world.steps.check_running(state)


def test_check_running_passes_on_the_addresses_and_configuring_stores_them(world):
    instance, state = world.launched()
    world.cloud.run(instance.cloud_resource_id)

    state = world.steps.mark_configuring(world.steps.check_running(state))

    record = world.repository.stored(instance.id)
    assert record.status is InstanceStatus.CONFIGURING
    assert record.private_ip == "10.0.0.4"


def test_a_machine_that_vanishes_while_starting_fails_the_launch(world):
    instance, state = world.launched()
    world.cloud.gone(instance.cloud_resource_id)

    with pytest.raises(CloudLaunchFailedError):
        world.steps.check_running(state)


def test_status_checks_then_the_agents_report_make_the_instance_ready(world):
    instance, state = world.configuring()

    state = world.steps.check_status(state)
    assert state["checksPassed"] is True
    waiting = world.steps.check_agent(state)
    assert waiting["agentReady"] is False
    world.agent.report_ready(instance.id, world.secret_of(instance), world.healthy_report())
    state = world.steps.mark_ready(world.steps.check_agent(waiting))

    assert state["ready"] is True
    assert world.status_of(instance) is InstanceStatus.READY
    assert world.events.detail_types() == ["Instance Provisioning", "Instance Ready"]


def test_the_wrong_gpus_fail_the_agent_check(world):
    instance, state = world.configuring()
    world.agent.report_ready(instance.id, world.secret_of(instance),
                             world.healthy_report(model="A10G"))

    with pytest.raises(GpuCheckFailedError):
        world.steps.check_agent(state)


def test_an_agent_that_never_reports_times_out(world):
    instance, state = world.configuring()
    world.clock.advance(seconds=state["agentTimeoutSeconds"])

    with pytest.raises(AgentTimeoutError):
        world.steps.check_agent(state)


def test_the_catch_target_records_error_with_our_words_and_releases_the_machine(world):
    instance, state = world.configuring()
    cause = json.dumps({"errorMessage": "arn:aws:iam::123456789012 said no (Quota)"})

    state = world.steps.record_error(
        {**state, "error": {"Error": "CloudCapacityError", "Cause": cause}}
    )

    record = world.repository.stored(instance.id)
    assert record.status is InstanceStatus.ERROR
    assert record.status_reason == "launch_failed: the cloud refused the launch (Quota)"
    assert "arn" not in state["reason"]
    assert not world.cloud.machine_for(instance.id).state.is_present
    assert world.events.detail_types()[-1] == "Instance Error"


def test_steps_after_a_stop_end_the_workflow_quietly(world):
    instance, state = world.configuring()
    world.instances.terminate(ALICE, instance.id)

    assert world.steps.check_status(state)["stopped"] is True
    assert world.steps.check_agent(state)["stopped"] is True
    assert world.steps.mark_ready(state)["stopped"] is True
    assert world.status_of(instance) is InstanceStatus.STOPPING
