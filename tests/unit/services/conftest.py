"""The use cases of chalicelib/services wired to in-memory twins of their ports (tests/twins.py;
tests/contract/ proves the twins keep their adapters' contracts): each test runs in
milliseconds and can arrange what the emulation cannot, a write landing between a read and
a write."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.domain.agent import AgentPolicy, GpuFound, GpuReport
from chalicelib.domain.catalog import load_catalog
from chalicelib.domain.identity import Caller
from chalicelib.domain.instance import Instance, LifecyclePolicy
from chalicelib.domain.states import InstanceStatus
from chalicelib.providers.registry import ProviderRegistry
from chalicelib.services.agent import AgentService
from chalicelib.services.agent_bootstrap import parse_agent_config, stop_method
from chalicelib.services.instances import InstanceService, ProvisionRequest, WorkflowTiming
from chalicelib.services.lifecycle import Lifecycle
from chalicelib.services.release import ReleaseSteps
from chalicelib.services.steps import LifecycleSteps
from tests.conftest import FakeClock
from tests.twins import (
    FakeCloudProvider,
    FakeWorkflowStarter,
    InMemoryInstanceRepository,
    RecordingEventPublisher,
)

ALICE = Caller("alice")


@dataclass
class World:
    clock: FakeClock
    repository: InMemoryInstanceRepository
    cloud: FakeCloudProvider
    events: RecordingEventPublisher
    workflow: FakeWorkflowStarter
    release_workflow: FakeWorkflowStarter
    lifecycle: Lifecycle
    instances: InstanceService
    steps: LifecycleSteps
    agent: AgentService
    release: ReleaseSteps
    policy: LifecyclePolicy

    def provision(self, user: Caller = ALICE, **request: Any) -> Instance:
        request.setdefault("instance_type", "g4dn.xlarge")
        return self.instances.provision(user, ProvisionRequest(**request)).instance

    def state(self, instance: Instance) -> dict[str, Any]:
        """The lifecycle workflow's input for the instance, as provision started it."""
        return dict(self.workflow.started[instance.id])

    def launched(self, user: Caller = ALICE) -> tuple[Instance, dict[str, Any]]:
        """A provisioned instance whose Launch step ran; its record and workflow state."""
        instance = self.provision(user)
        state = self.steps.launch(self.state(instance))
        return self.repository.stored(instance.id), state

    def configuring(self) -> tuple[Instance, dict[str, Any]]:
        instance, state = self.launched()
        assert instance.cloud_resource_id is not None
        self.cloud.pass_checks(instance.cloud_resource_id)
        state = self.steps.mark_configuring(self.steps.check_running(state))
        return self.repository.stored(instance.id), state

    def ready(self) -> Instance:
        instance, state = self.configuring()
        self.agent.report_ready(instance.id, self.secret_of(instance), self.healthy_report())
        self.steps.mark_ready(self.steps.check_agent(state))
        return self.repository.stored(instance.id)

    def secret_of(self, instance: Instance) -> str:
        """The agent secret in the machine's user data, as the agent on it reads it."""
        machine = self.cloud.machine_for(instance.id)
        assert machine is not None and machine.request.user_data is not None
        config = parse_agent_config(machine.request.user_data)
        assert config is not None
        return str(config["secret"])

    def healthy_report(self, model: str = "T4", count: int = 1) -> GpuReport:
        return GpuReport(
            ok=True, reported_at=self.clock(),
            gpus=tuple(GpuFound(n, f"Tesla {model}", 15360, "550.54") for n in range(count)),
        )

    def status_of(self, instance: Instance) -> InstanceStatus:
        return self.repository.stored(instance.id).status


@pytest.fixture
def world(clock: FakeClock) -> World:
    policy = LifecyclePolicy()
    agent_policy = AgentPolicy(callback_url="https://provisioner.example/api")
    repository = InMemoryInstanceRepository(policy)
    cloud = FakeCloudProvider("aws", clock)
    events = RecordingEventPublisher()
    providers = ProviderRegistry(
        factories={"aws": lambda: cloud}, regions={"aws": "us-east-1"},
        missing_settings={"aws": []},
    )
    lifecycle = Lifecycle(repository, providers, events, clock)
    workflow = FakeWorkflowStarter()
    release_workflow = FakeWorkflowStarter(
        "arn:aws:states:us-east-1:123456789012:stateMachine:release"
    )
    instances = InstanceService(
        lifecycle, load_catalog(), workflow, WorkflowTiming(poll_seconds=0, max_checks=3),
        release_workflow, WorkflowTiming(poll_seconds=0, max_checks=2),
    )
    steps = LifecycleSteps(
        lifecycle, agent_policy, lambda provider: stop_method(provider, agent_policy, False)
    )
    return World(
        clock, repository, cloud, events, workflow, release_workflow, lifecycle, instances,
        steps, AgentService(repository, clock, agent_policy), ReleaseSteps(lifecycle, policy),
        policy,
    )
