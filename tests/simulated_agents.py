"""The agents of the emulated machines, played in-process for the tests: when the lifecycle
workflow first asks whether an instance's agent reported, that machine's agent "boots" and
reports, through the real API route, with the secret it found in its own user data.

`make run` runs the real agent program instead (local/agents.py); these tests of the service
side of the protocol stay fast and deterministic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib import bootstrap
from local.agents import agent_config_of
from local.gpus import gpus_of

HEALTHY = "healthy"
WRONG_GPU = "wrong-gpu"
NO_DRIVER = "no-driver"
SILENT = "silent"  # the agent never reports (no Python on the image, a firewall...)

Post = Callable[[str, dict[str, Any], dict[str, str]], tuple[int, Any]]


@dataclass
class SimulatedAgents:
    post: Post
    arm: Any  # the local ARM fake, for the Azure VMs' customData
    behaviour: dict[str, str] = field(default_factory=dict)  # instance id or "default"
    booted: list[str] = field(default_factory=list)

    def before_step(self, name: str, event: dict[str, Any]) -> None:
        instance_id = str(event.get("instanceId", ""))
        if name == "check_instance_agent" and instance_id not in self.booted:
            self.booted.append(instance_id)
            self.boot(instance_id)

    def boot(self, instance_id: str) -> None:
        behaviour = self.behaviour.get(instance_id, self.behaviour.get("default", HEALTHY))
        if behaviour == SILENT:
            return
        config = self.config_of(instance_id)
        record = bootstrap.container().repository.get(instance_id)
        assert record is not None
        body: dict[str, Any]
        if behaviour == NO_DRIVER:
            body = {"ok": False, "gpus": [], "error": "nvidia-smi failed (exit code 9): "
                    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                    "driver"}
        else:
            model = "A10G" if behaviour == WRONG_GPU else record.gpu_model
            body = {"ok": True, "error": None, "gpus": gpus_of(model, record.gpu_count)}
        self.post(f"/api/agent/instances/{instance_id}/ready", body, self.headers(config))

    def heartbeat(self, instance_id: str, utilization: int, processes: int = 0) -> Any:
        record = bootstrap.container().repository.get(instance_id)
        assert record is not None
        body = {"gpus": [
            {"index": n, "utilizationPercent": utilization, "memoryUsedMib": 1024,
             "processes": processes} for n in range(record.gpu_count)
        ], "healthy": True}
        return self.post(f"/api/agent/instances/{instance_id}/heartbeat", body,
                         self.headers(self.config_of(instance_id)))

    @staticmethod
    def headers(config: dict[str, Any]) -> dict[str, str]:
        return {"Authorization": f"Agent {config['secret']}"}

    def config_of(self, instance_id: str) -> dict[str, Any]:
        """The agent configuration in the machine's user data, as cloud-init would see it."""
        record = bootstrap.container().repository.get(instance_id)
        assert record is not None
        return agent_config_of(record, self.arm)
