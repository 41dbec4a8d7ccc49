"""The agent program that runs on each machine (chalicelib/agent/provisioner_agent.py), run
against a scripted service, a scripted nvidia-smi and a clock of its own: its boot report, its
heartbeats, and the three ways it stops its machine (told to, cut off, past its lifetime)."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib.agent import provisioner_agent as agent_program
from chalicelib.agent.provisioner_agent import Agent

SECRET = "s3cr3t-of-this-instance"
BASE = "https://api.example/v1/api/agent/instances/inst-1/"
T4_ROW = "0, Tesla T4, 15360, 535.104.05, 0"
START = 1_780_000_000.0  # a wall-clock time, in seconds


@dataclass
class Machine:
    """The machine around the agent: the service it calls, its nvidia-smi, its clock."""

    answers: list[Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]] = field(
        default_factory=list
    )
    default: tuple[int, dict[str, Any]] | None = (200, {"status": "READY"})
    gpus: str = T4_ROW
    utilization: str = "0, GPU-aaaa, 0, 0"
    apps: str = ""
    nvidia_smi: bool = True
    now: float = START
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    arm: list[tuple[str, str]] = field(default_factory=list)
    arm_fails: bool = False

    def transport(self, method, url, headers, body, timeout):
        if url.startswith(agent_program.IMDS) or url.startswith(agent_program.ARM):
            return self.azure(method, url, headers)
        payload = json.loads(body)
        self.calls.append((url.removeprefix(BASE), headers["Authorization"], payload))
        if self.answers:
            status, answer = self.answers.pop(0)(url, payload)
        elif self.default is None:
            raise OSError("connection refused")
        else:
            status, answer = self.default
        return status, json.dumps(answer).encode()

    def azure(self, method, url, headers):
        self.arm.append((method, url.split("?")[0]))
        if "oauth2/token" in url:
            return 200, json.dumps({"access_token": "arm-token-xyz"}).encode()
        if "resourceId" in url:
            return 200, b"/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/vm/v"
        if self.arm_fails:
            return 403, b'{"error": "AuthorizationFailed"}'
        assert headers["Authorization"] == "Bearer arm-token-xyz"
        return 202, b""

    def run(self, argv, timeout):
        self.commands.append(list(argv))
        if argv[0] != "nvidia-smi":
            return 0, "", ""
        if not self.nvidia_smi:
            raise FileNotFoundError(2, "No such file or directory")
        if argv[1].startswith("--query-gpu=index,name"):
            return 0, self.gpus + "\n", ""
        if argv[1].startswith("--query-gpu=index,uuid"):
            return 0, self.utilization + "\n", ""
        return 0, self.apps, ""

    def sleep(self, seconds):
        self.now += seconds

    def agent(self, **config: Any) -> Agent:
        settings = {"instanceId": "inst-1", "url": "https://api.example/v1/", "secret": SECRET,
                    "heartbeatSeconds": 60, "deadmanSeconds": 2400, **config}
        return Agent(settings, self.transport, self.run, lambda: self.now, self.sleep,
                     self.logs.append)

    def routes(self) -> list[str]:
        return [route for route, _, _ in self.calls]


def answer(status: int, body: dict[str, Any] | None = None):
    return lambda url, payload: (status, body or {})


def finished_after(beats: int, machine: Machine) -> None:
    """The service answers `beats` heartbeats, then says the instance is finished (410)."""
    machine.answers = [answer(200, {"status": "READY"})] * (beats + 1) + [answer(410)]


def test_at_boot_the_agent_reports_the_gpus_nvidia_smi_found_with_its_instances_secret():
    machine = Machine(gpus="0, Tesla T4, 15360, 535.104.05, 0\n1, Tesla T4, 15360, 535.104.05, 0")
    finished_after(0, machine)

    machine.agent().run()

    route, authorization, report = machine.calls[0]
    assert (route, authorization) == ("ready", f"Agent {SECRET}")
    assert report == {"ok": True, "error": None, "gpus": [
        {"index": 0, "name": "Tesla T4", "memoryTotalMib": 15360,
         "driverVersion": "535.104.05", "eccErrors": 0},
        {"index": 1, "name": "Tesla T4", "memoryTotalMib": 15360,
         "driverVersion": "535.104.05", "eccErrors": 0},
    ]}


def test_a_machine_without_nvidia_smi_reports_that_it_cannot_query_its_gpus():
    machine = Machine(nvidia_smi=False)
    finished_after(0, machine)

    machine.agent().run()

    _, _, report = machine.calls[0]
    assert report["ok"] is False
    assert report["gpus"] == []
    assert "nvidia-smi cannot run" in report["error"]


def test_unsupported_fields_of_nvidia_smi_are_reported_as_unknown_not_as_zero():
    machine = Machine(gpus="0, Tesla K80, 11441, 470.82.01, [N/A]")
    finished_after(0, machine)

    machine.agent().run()

    assert machine.calls[0][2]["gpus"][0]["eccErrors"] is None


def test_heartbeats_carry_each_gpus_utilization_memory_and_processes_every_period():
    machine = Machine(
        utilization="0, GPU-aaaa, 97, 14000\n1, GPU-bbbb, 0, 3",
        apps="GPU-aaaa, 4242\nGPU-aaaa, 4243\n",
    )
    finished_after(2, machine)

    machine.agent().run()

    assert machine.routes() == ["ready", "heartbeat", "heartbeat", "heartbeat"]
    beat = machine.calls[1][2]
    assert beat == {"healthy": True, "error": None, "gpus": [
        {"index": 0, "utilizationPercent": 97, "memoryUsedMib": 14000, "processes": 2},
        {"index": 1, "utilizationPercent": 0, "memoryUsedMib": 3, "processes": 0},
    ]}
    # The first heartbeat follows the accepted report at once, then one per period.
    assert machine.now - START == pytest.approx(2 * 60)


def test_the_agent_takes_the_heartbeat_period_the_service_answers():
    machine = Machine()
    machine.answers = [answer(200), answer(200, {"heartbeatSeconds": 15}), answer(200),
                       answer(410)]

    machine.agent().run()

    assert machine.now - START == pytest.approx(15 + 15)


def test_a_failed_gpu_query_is_reported_unhealthy_with_the_reason():
    machine = Machine(utilization="garbage")
    finished_after(1, machine)

    machine.agent().run()

    beat = machine.calls[1][2]
    assert beat["healthy"] is False
    assert beat["gpus"] == []
    assert "unparseable nvidia-smi output" in beat["error"]


def test_when_the_service_says_the_instance_is_finished_the_agent_powers_the_machine_off():
    machine = Machine()
    finished_after(3, machine)

    code = machine.agent(stop={"method": "command", "command": ["systemctl", "poweroff"]}).run()

    assert code == agent_program.STOPPED
    assert machine.commands[-1] == ["systemctl", "poweroff"]


def test_a_stop_in_the_services_answer_stops_the_machine():
    machine = Machine()
    machine.answers = [answer(200), answer(200, {"status": "STOPPING", "stop": True})]

    machine.agent().run()

    assert machine.commands[-1] == agent_program.POWER_OFF


def test_cut_off_from_the_service_the_agent_stops_its_machine_at_the_dead_man_delay():
    machine = Machine()
    machine.answers = [answer(200), answer(200)]
    machine.default = None  # then the service is unreachable

    code = machine.agent(deadmanSeconds=600).run()

    assert code == agent_program.STOPPED
    assert machine.commands[-1] == agent_program.POWER_OFF
    # Last contact at the first heartbeat (t=0); stopped 600 s later, not a period after.
    assert machine.now - START == pytest.approx(600)
    assert any("dead-man switch" in line for line in machine.logs)


def test_refusals_are_no_contact_either_a_machine_whose_secret_is_refused_stops_itself():
    machine = Machine(default=(401, {"detail": "This agent secret is not valid"}))

    machine.agent(deadmanSeconds=300).run()

    assert machine.commands[-1] == agent_program.POWER_OFF
    assert machine.now - START == pytest.approx(300)


def test_a_service_that_answers_keeps_the_machine_running_past_the_dead_man_delay():
    machine = Machine()
    finished_after(30, machine)

    machine.agent(deadmanSeconds=600).run()

    assert machine.routes().count("heartbeat") == 31  # 30 minutes, never cut off
    assert any("the service says the instance is finished" in line for line in machine.logs)


def test_past_its_lifetime_the_agent_stops_the_machine_whatever_the_service_says():
    machine = Machine()  # the service answers every heartbeat
    deadline = datetime.fromtimestamp(START + 1000, UTC).isoformat().replace("+00:00", "Z")

    machine.agent(lifetimeDeadline=deadline).run()

    assert machine.commands[-1] == agent_program.POWER_OFF
    # Heartbeats every 60 s, but the last wait ends at the deadline, not a period later.
    assert machine.now - START == pytest.approx(1000)
    assert any("lifetime deadline" in line for line in machine.logs)


def test_the_secret_never_appears_in_the_agents_log():
    machine = Machine(default=(401, {"detail": f"bad secret {SECRET}"}))

    machine.agent(deadmanSeconds=120).run()

    assert machine.logs
    assert not any(SECRET in line for line in machine.logs)


def test_on_azure_the_agent_deletes_its_own_vm_through_its_managed_identity():
    machine = Machine()
    finished_after(0, machine)

    code = machine.agent(stop={"method": "azure-self-delete"}).run()

    assert code == agent_program.STOPPED
    assert [method for method, _ in machine.arm] == ["GET", "GET", "DELETE"]
    assert machine.arm[-1][1].endswith("/resourceGroups/g/providers/Microsoft.Compute/vm/v")
    assert not any(cmd[0] != "nvidia-smi" for cmd in machine.commands)  # no power-off
    assert not any("arm-token-xyz" in line for line in machine.logs)


def test_when_azure_refuses_the_self_delete_the_agent_still_powers_off():
    machine = Machine(arm_fails=True)
    finished_after(0, machine)

    machine.agent(stop={"method": "azure-self-delete"}).run()

    assert [m for m, _ in machine.arm].count("DELETE") == 3
    assert machine.commands[-1] == agent_program.POWER_OFF
    assert any("stays allocated and billed" in line for line in machine.logs)


def test_in_the_local_emulation_the_agent_exits_with_the_code_its_runner_watches_for():
    machine = Machine()
    finished_after(0, machine)

    assert machine.agent(stop={"method": "exit", "code": 3}).run() == 3
    assert not any(cmd[0] != "nvidia-smi" for cmd in machine.commands)


@pytest.mark.parametrize(
    "config",
    [{"secret": ""}, {"heartbeatSeconds": 0}, {"deadmanSeconds": "soon"},
     {"stop": {"method": "reboot"}}],
)
def test_an_unusable_configuration_is_refused_before_anything_runs(config):
    with pytest.raises(ValueError):
        Machine().agent(**config)


def test_an_unreadable_configuration_file_exits_with_the_bad_config_code(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text("{not json")

    assert agent_program.main(["--config", str(path)]) == agent_program.BAD_CONFIG


def test_the_agent_runs_on_the_python_3_8_of_older_gpu_images():
    source = Path(agent_program.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert "UTC" not in imported  # datetime.UTC is 3.11
    modules = {alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert modules <= {"__future__", "argparse", "contextlib", "json", "subprocess", "sys",
                       "time", "typing", "urllib", "datetime"}  # the standard library only
