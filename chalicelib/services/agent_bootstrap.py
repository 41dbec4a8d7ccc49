"""The user data that puts the agent on a machine at launch: a cloud-init document (EC2
UserData, Azure customData) holding the agent program, its configuration (with the
instance's secret) and a systemd unit that runs it. Nothing of a request's metadata goes in."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from chalicelib.domain.agent import AgentPolicy
from chalicelib.domain.instance import Instance

AGENT_SOURCE = Path(__file__).resolve().parent.parent / "agent" / "provisioner_agent.py"
AGENT_PATH = "/opt/provisioner-agent/provisioner_agent.py"
CONFIG_PATH = "/etc/provisioner-agent/config.json"
UNIT_PATH = "/etc/systemd/system/provisioner-agent.service"
# EC2 takes at most 16 KB of user data (before its base64); Azure's customData 64 KB.
USER_DATA_LIMIT = 16 * 1024
CLOUD_CONFIG = "#cloud-config\n"

# How the agent stops its machine, per cloud (docs/agent.md): on EC2 an OS power-off
# terminates the instance (it is launched with InstanceInitiatedShutdownBehavior=terminate);
# on Azure an OS power-off leaves the VM allocated and billed, so the agent deletes its own
# VM through its managed identity when the deployment gives it one.
POWER_OFF = {"method": "command", "command": ["systemctl", "poweroff"]}
AZURE_SELF_DELETE = {"method": "azure-self-delete"}
# The local emulation: the agent exits with this code and the local runner, its parent,
# terminates the emulated machine.
LOCAL_EXIT = {"method": "exit", "code": 3}

UNIT = """[Unit]
Description=Instance Provisioner agent (GPU checks, heartbeats, dead-man switch)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/env python3 {agent} --config {config}
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


class UserDataTooLargeError(ValueError):
    """The agent and its configuration do not fit the cloud's user-data limit."""


@cache
def _agent_program() -> str:
    """The agent's source, gzipped and base64'd for cloud-init (read once per process)."""
    return base64.b64encode(gzip.compress(AGENT_SOURCE.read_bytes(), mtime=0)).decode()


def agent_config(
    instance: Instance, secret: str, policy: AgentPolicy, stop: dict[str, Any], deadman: int
) -> dict[str, Any]:
    return {
        "instanceId": instance.id,
        "url": policy.callback_url,
        "secret": secret,
        "heartbeatSeconds": policy.heartbeat_seconds,
        "deadmanSeconds": deadman,
        "lifetimeDeadline": _iso(instance.lifetime_deadline()),
        "idleGpuUtilizationPercent": policy.idle_gpu_utilization_percent,
        "stop": stop,
    }


def user_data(config: dict[str, Any]) -> str:
    """The cloud-init document (JSON is YAML, so #cloud-config parses it)."""
    document = {
        "write_files": [
            {"path": AGENT_PATH, "encoding": "gz+b64", "permissions": "0755",
             "content": _agent_program()},
            {"path": CONFIG_PATH, "encoding": "b64", "permissions": "0600",
             "content": base64.b64encode(json.dumps(config).encode()).decode()},
            {"path": UNIT_PATH, "permissions": "0644",
             "content": UNIT.format(agent=AGENT_PATH, config=CONFIG_PATH)},
        ],
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "provisioner-agent.service"],
        ],
    }
    text = CLOUD_CONFIG + json.dumps(document, separators=(",", ":"))
    if len(text.encode()) > USER_DATA_LIMIT:
        raise UserDataTooLargeError(
            f"The agent's user data is {len(text.encode())} bytes; EC2 takes {USER_DATA_LIMIT}."
        )
    return text


def parse_agent_config(text: str) -> dict[str, Any] | None:
    """The agent configuration inside a machine's user data (the local runner and the tests
    play the machine's part with it); None for user data that is not ours."""
    if not text.startswith(CLOUD_CONFIG):
        return None
    try:
        document = json.loads(text[len(CLOUD_CONFIG):])
        [entry] = [f for f in document["write_files"] if f["path"] == CONFIG_PATH]
        return dict(json.loads(base64.b64decode(entry["content"])))
    except (ValueError, KeyError, TypeError):
        return None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def stop_method(provider: str, policy: AgentPolicy, azure_self_delete: bool) -> dict[str, Any]:
    """How the agent on a `provider` machine stops it when cut off from the service."""
    if policy.stop_method == "exit":
        return LOCAL_EXIT
    if provider == "azure" and azure_self_delete:
        return AZURE_SELF_DELETE
    return POWER_OFF
