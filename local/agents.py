"""The agents of `make run`'s emulated machines: when the lifecycle first asks whether a
machine's agent reported, the machine "boots" and the real agent program
(chalicelib/agent/provisioner_agent.py) starts as a process, with the configuration cloud-init
would have written from the machine's user data and a fake nvidia-smi (local/bin) on its PATH.
When the agent stops its machine (it exits with the local stop code), the emulated machine
powers off: an EC2 instance is terminated (it was launched so), an Azure VM (no identity to
delete itself with, here) stays stopped but allocated until the reaper's tick deletes it;
when the machine ends, its agent is stopped with it. The GPUs' load is the user's: see
local/gpus.py."""

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
from chalicelib.providers.base import CloudState
from chalicelib.services.agent_bootstrap import AGENT_SOURCE, LOCAL_EXIT, parse_agent_config
from local.gpus import fake_gpu_environment

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
    """One agent process per emulated machine; its configuration (with the instance's secret)
    in a private directory of its own under `root`."""

    def __init__(self, root: Path, arm: Any, machine_check_seconds: float = 2.0) -> None:
        self.root = root
        self.arm = arm
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.booted: set[str] = set()  # machines whose boot began
        self.stopping = False
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(
            target=self.stop_agents_of_ended_machines, args=(machine_check_seconds,),
            daemon=True, name="agents",
        ).start()

    def before_step(self, name: str, event: dict[str, Any]) -> None:
        """The machine boots on its own time, as a real one does: in a thread of its own,
        not inside the workflow step that asked (a burst of machines booting one after
        another would outlast the step's timeout); the step sees the agent's report later."""
        instance_id = str(event.get("instanceId", ""))
        if name != "check_instance_agent":
            return
        with self.lock:
            if instance_id in self.booted or self.stopping:
                return
            self.booted.add(instance_id)
        threading.Thread(
            target=self.boot, args=(instance_id,), daemon=True, name=f"boot-{instance_id}"
        ).start()

    def boot(self, instance_id: str) -> None:
        try:
            process = self.start(instance_id)
        except (LookupError, OSError) as error:
            log.warning("no agent for %s: %s", instance_id, error)
            return
        with self.lock:
            self.processes[instance_id] = process
            if not self.stopping:
                return
        process.terminate()  # booted while make run stops

    def start(self, instance_id: str) -> subprocess.Popen[bytes]:
        record = bootstrap.container().repository.get(instance_id)
        if record is None:
            raise LookupError(f"no record {instance_id}")
        directory = self.root / instance_id
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = directory / "config.json"
        config.write_text(json.dumps(agent_config_of(record, self.arm)))
        config.chmod(0o600)
        gpus = fake_gpu_environment(instance_id, record.gpu_model, record.gpu_count)
        environment = {**os.environ, **gpus}
        process = subprocess.Popen(
            [sys.executable, str(AGENT_SOURCE), "--config", str(config)],
            env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own session: Ctrl-C on `make run` reaches make run alone, which then
            # terminates the agents (no KeyboardInterrupt traceback from each of them).
            start_new_session=True,
        )
        log.info(
            "%s: machine booted with %s x %s, agent started (its GPUs: %s/%s.json)",
            instance_id, record.gpu_count, gpus["FAKE_GPU_NAME"], gpus["LOCAL_GPU_DIR"],
            instance_id,
        )
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
        """The agent stopped its machine: its OS powers off."""
        container = bootstrap.container()
        current = container.repository.get(record.id) or record
        if current.cloud_resource_id is None:
            return
        if current.provider == "azure":
            self.arm.shut_down_from_inside(current.cloud_resource_id.rsplit("/", 1)[-1])
            log.info("%s: VM powered off by its agent (stopped, still allocated)", record.id)
            return
        container.providers.get(current.provider).terminate(
            current.cloud_resource_id, current.region
        )
        log.info("%s: machine powered off by its agent", record.id)

    def stop_agents_of_ended_machines(self, every: float) -> None:
        """A machine that ends takes its agent with it."""
        while not self.stopped.wait(every):
            with self.lock:
                running = {i: p for i, p in self.processes.items() if p.poll() is None}
            for instance_id, process in running.items():
                if self.machine_ended(instance_id):
                    process.terminate()
                    log.info("%s: machine ended, its agent with it", instance_id)

    @staticmethod
    def machine_ended(instance_id: str) -> bool:
        container = bootstrap.container()
        record = container.repository.get(instance_id)
        if record is None or record.cloud_resource_id is None:
            return False
        try:
            view = container.providers.get(record.provider).describe(
                record.cloud_resource_id, record.region
            )
        except Exception:  # noqa: BLE001 - an emulation hiccup: look again next time
            return False
        return view.state in (CloudState.TERMINATING, CloudState.TERMINATED)

    def stop_all(self) -> None:
        self.stopped.set()
        with self.lock:
            self.stopping = True
            for process in self.processes.values():
                if process.poll() is None:
                    process.terminate()
            for process in self.processes.values():
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
