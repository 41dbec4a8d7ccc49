"""The agents of `make run`'s emulated machines: when the lifecycle first asks whether a
machine's agent reported, the machine "boots" and the real agent program
(chalicelib/agent/provisioner_agent.py) starts as a process, with the configuration cloud-init
would have written from the machine's user data and a fake nvidia-smi (local/bin) on its PATH.
When the agent stops its machine (it exits with the local stop code), the emulated machine is
terminated, as EC2 terminates an instance whose OS powers off."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3

from chalicelib import bootstrap
from chalicelib.domain.instance import Instance
from chalicelib.services.agent_bootstrap import AGENT_SOURCE, LOCAL_EXIT, parse_agent_config
from local.gpus import FAKE_NVIDIA_SMI_DIR, write_machine

log = logging.getLogger("agent")


def agent_config_of(record: Instance, arm: Any) -> dict[str, Any]:
    """The agent configuration in a machine's user data, as cloud-init on it would read it
    (EC2's userData attribute, or the Azure VM's customData in the local ARM fake)."""
    if record.cloud_resource_id is None:
        raise LookupError(f"{record.id} has no machine yet")
    if record.provider == "aws":
        ec2 = boto3.client("ec2", region_name=record.region)
        encoded = ec2.describe_instance_attribute(
            InstanceId=record.cloud_resource_id, Attribute="userData"
        )["UserData"].get("Value", "")
    else:
        vm = arm.vm_model(record.id)
        encoded = vm["properties"]["osProfile"].get("customData", "") if vm else ""
    config = parse_agent_config(base64.b64decode(encoded).decode())
    if config is None:
        raise LookupError(f"the machine of {record.id} holds no agent configuration")
    return config


class LocalAgents:
    """One agent process per emulated machine, each in a directory of its own under `root`
    (its config.json, and gpus.json for the fake nvidia-smi: edit it to make the GPUs busy)."""

    def __init__(self, root: Path, arm: Any) -> None:
        self.root = root
        self.arm = arm
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()

    def before_step(self, name: str, event: dict[str, Any]) -> None:
        instance_id = str(event.get("instanceId", ""))
        if name != "check_instance_agent":
            return
        with self.lock:
            if instance_id in self.processes:
                return
            try:
                self.processes[instance_id] = self.start(instance_id)
            except (LookupError, OSError) as error:
                log.warning("no agent for %s: %s", instance_id, error)

    def start(self, instance_id: str) -> subprocess.Popen[bytes]:
        record = bootstrap.container().repository.get(instance_id)
        if record is None:
            raise LookupError(f"no record {instance_id}")
        directory = self.root / instance_id
        gpus = write_machine(directory, record.gpu_model, record.gpu_count)
        config = directory / "config.json"
        config.write_text(json.dumps(agent_config_of(record, self.arm)))
        config.chmod(0o600)
        environment = {
            **os.environ,
            "PATH": f"{FAKE_NVIDIA_SMI_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
            "LOCAL_GPU_DIR": str(directory),
        }
        process = subprocess.Popen(
            [sys.executable, str(AGENT_SOURCE), "--config", str(config)],
            env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        log.info("%s: machine booted, agent started (GPU load: %s)", instance_id, gpus)
        threading.Thread(
            target=self.watch, args=(record, process), daemon=True, name=f"agent-{instance_id}"
        ).start()
        return process

    def watch(self, record: Instance, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            # The agent's own lines start with a timestamp and its name: keep what follows.
            log.info("%s", text.split(" provisioner-agent ", 1)[-1])
        code = process.wait()
        if code == LOCAL_EXIT["code"]:
            self.power_off(record)

    def power_off(self, record: Instance) -> None:
        """The agent stopped its machine: the emulated cloud ends it."""
        container = bootstrap.container()
        current = container.repository.get(record.id) or record
        if current.cloud_resource_id is None:
            return
        container.providers.get(current.provider).terminate(
            current.cloud_resource_id, current.region
        )
        log.info("%s: machine powered off by its agent", record.id)

    def stop_all(self) -> None:
        with self.lock:
            for process in self.processes.values():
                if process.poll() is None:
                    process.terminate()
            for process in self.processes.values():
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
