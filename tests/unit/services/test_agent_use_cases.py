"""AgentService (the boot report and heartbeats) on in-memory twins."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chalicelib.domain.agent import GpuSample, Heartbeat
from chalicelib.domain.errors import AgentRefusedError, InstanceFinishedError
from chalicelib.domain.states import InstanceStatus
from tests.unit.services.conftest import ALICE


def beat(world, utilization: int) -> Heartbeat:
    return Heartbeat(at=world.clock(), gpus=(GpuSample(0, utilization, 1024, 0),))


def test_only_the_instances_own_secret_is_heard(world):
    instance, _ = world.configuring()

    with pytest.raises(AgentRefusedError):
        world.agent.report_ready(instance.id, "not-the-secret", world.healthy_report())
    with pytest.raises(AgentRefusedError):
        world.agent.report_ready("inst-unknown", world.secret_of(instance), world.healthy_report())
    assert world.repository.stored(instance.id).gpu_report is None


def test_the_first_boot_report_counts_and_a_repeat_changes_nothing(world):
    instance, _ = world.configuring()
    secret = world.secret_of(instance)

    answer = world.agent.report_ready(instance.id, secret, world.healthy_report())
    world.clock.advance(seconds=30)
    world.agent.report_ready(instance.id, secret, world.healthy_report(model="A10G"))

    assert answer.status is InstanceStatus.CONFIGURING and answer.stop is False
    assert world.repository.stored(instance.id).gpu_report.gpus[0].name == "Tesla T4"


def test_a_report_racing_the_workflow_is_stored_on_the_fresh_record(world):
    """The race of confirm on the agent's side: the workflow writes the record between the
    report's read and its write; the report is read again and kept."""
    instance, _ = world.configuring()

    def workflow_writes(_):
        current = world.repository.stored(instance.id)
        world.repository.write_behind_the_back(replace(current, updated_at=world.clock()))

    world.repository.before_save = workflow_writes
    world.agent.report_ready(instance.id, world.secret_of(instance), world.healthy_report())

    assert world.repository.stored(instance.id).gpu_report is not None


def test_a_busy_gpu_is_evidence_of_activity_an_idle_one_is_not(world):
    ready = world.ready()
    secret = world.secret_of(ready)
    world.clock.advance(minutes=10)

    world.agent.heartbeat(ready.id, secret, beat(world, 2))
    idle = world.repository.stored(ready.id)
    world.clock.advance(minutes=1)
    world.agent.heartbeat(ready.id, secret, beat(world, 80))
    busy = world.repository.stored(ready.id)

    assert idle.last_activity_at == ready.last_activity_at
    assert idle.last_heartbeat is not None
    assert busy.last_activity_at == world.clock()
    assert busy.last_evidence_source == "gpu"


def test_a_stopping_instance_tells_its_agent_to_stop_and_a_finished_one_refuses(world):
    ready = world.ready()
    secret = world.secret_of(ready)
    world.instances.terminate(ALICE, ready.id)

    answer = world.agent.heartbeat(ready.id, secret, beat(world, 90))
    assert answer.stop is True

    current = world.repository.stored(ready.id)
    world.repository.write_behind_the_back(
        current.transition(InstanceStatus.TERMINATED, world.clock(), "user_request")
    )
    with pytest.raises(InstanceFinishedError):
        world.agent.heartbeat(ready.id, secret, beat(world, 90))
