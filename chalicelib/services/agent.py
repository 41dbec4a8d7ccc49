"""The agent on each machine speaks for it: its boot report of the GPUs, and its heartbeats
of GPU utilization (evidence of activity). Each call carries the instance's own secret."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from chalicelib.domain.agent import GPU, AgentPolicy, GpuReport, Heartbeat, secret_matches
from chalicelib.domain.errors import AgentRefusedError, InstanceFinishedError
from chalicelib.domain.instance import Instance
from chalicelib.domain.states import IN_SERVICE_STATUSES, InstanceStatus
from chalicelib.persistence.repository import InstanceRepository
from chalicelib.services.instances import retry_on_race
from chalicelib.services.ports import Clock

# The default dead-man delay is the instance's idle timeout plus this.
DEADMAN_MARGIN = timedelta(minutes=10)


@dataclass(frozen=True)
class AgentInstructions:
    """What the service tells the agent after each call."""

    status: InstanceStatus
    heartbeat_seconds: int
    deadman_seconds: int
    lifetime_deadline: datetime
    stop: bool


def deadman_for(instance: Instance, policy: AgentPolicy) -> timedelta:
    """How long the agent may go without reaching the service before it stops its machine."""
    if policy.deadman_minutes is not None:
        return timedelta(minutes=policy.deadman_minutes)
    return timedelta(minutes=instance.idle_timeout_minutes) + DEADMAN_MARGIN


class AgentService:
    def __init__(self, repository: InstanceRepository, clock: Clock, policy: AgentPolicy) -> None:
        self.repository = repository
        self.clock = clock
        self.policy = policy

    def report_ready(self, instance_id: str, secret: str, report: GpuReport) -> AgentInstructions:
        """Keep what the agent found at boot; the lifecycle workflow compares it with the
        catalog and decides READY or ERROR."""

        def store() -> Instance:
            instance = self._authenticated(instance_id, secret)
            if instance.gpu_report is not None or instance.status is InstanceStatus.STOPPING:
                return instance  # a repeated report (the agent retried): the first one counts
            return self.repository.save(
                replace(instance, gpu_report=report, updated_at=self.clock()),
                expected_status=instance.status,
            )

        return self._instructions(retry_on_race(store))

    def heartbeat(self, instance_id: str, secret: str, heartbeat: Heartbeat) -> AgentInstructions:
        def store() -> Instance:
            instance = self._authenticated(instance_id, secret)
            if instance.status is InstanceStatus.STOPPING:
                return instance
            changed = replace(instance, last_heartbeat=heartbeat, updated_at=heartbeat.at)
            evidence = heartbeat.is_evidence(self.policy.idle_gpu_utilization_percent)
            if evidence and instance.status in IN_SERVICE_STATUSES:
                changed = replace(changed.with_activity(heartbeat.at, GPU),
                                  last_heartbeat=heartbeat)
            return self.repository.save(changed, expected_status=instance.status)

        return self._instructions(retry_on_race(store))

    def _authenticated(self, instance_id: str, secret: str) -> Instance:
        instance = self.repository.get(instance_id)
        # An unknown instance and a wrong secret answer alike: nothing to learn from trying.
        if instance is None or not secret_matches(secret, instance.agent_secret_hash):
            raise AgentRefusedError("This agent secret is not valid for this instance.")
        if instance.status.is_terminal:
            raise InstanceFinishedError(
                f"Instance {instance_id} is {instance.status}: its agent should stop the machine."
            )
        return instance

    def _instructions(self, instance: Instance) -> AgentInstructions:
        return AgentInstructions(
            status=instance.status,
            heartbeat_seconds=self.policy.heartbeat_seconds,
            deadman_seconds=int(deadman_for(instance, self.policy).total_seconds()),
            lifetime_deadline=instance.lifetime_deadline(),
            stop=instance.status is InstanceStatus.STOPPING,
        )
