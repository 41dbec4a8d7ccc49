"""The agent's GPU queries run the real way (a subprocess) against the fake nvidia-smi that
`make run` puts on each emulated machine's PATH (local/bin/nvidia-smi), with the user's
control file in LOCAL_GPU_DIR: a healthy machine, the wrong GPU, no driver, a slow and a
garbled nvidia-smi."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.agent import provisioner_agent as agent_program
from chalicelib.agent.provisioner_agent import Agent
from local.gpus import fake_gpu_environment

INSTANCE = "inst-0123456789abcdef0123456789abcdef"


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A g5.12xlarge-like machine (4 x A10G) whose GPUs `control(...)` sets."""
    monkeypatch.setenv("LOCAL_GPU_DIR", str(tmp_path))
    for name, value in fake_gpu_environment(INSTANCE, "A10G", 4).items():
        monkeypatch.setenv(name, value)

    def control(file: str = INSTANCE, **state) -> None:
        (tmp_path / f"{file}.json").write_text(json.dumps(state))

    return control


def agent(**config) -> Agent:
    settings = {"instanceId": INSTANCE, "url": "http://127.0.0.1:1", "secret": "s",
                "commandTimeoutSeconds": 2, **config}
    return Agent(settings, lambda *a: (200, b"{}"), agent_program.run_command, lambda: 0.0,
                 lambda s: None, lambda line: None)


def test_a_healthy_machine_reports_its_catalog_gpus(machine):
    report = agent().gpu_report()

    assert report["ok"] is True
    assert [g["name"] for g in report["gpus"]] == ["NVIDIA A10G"] * 4
    assert report["gpus"][0] == {"index": 0, "name": "NVIDIA A10G", "memoryTotalMib": 23028,
                                 "driverVersion": "535.104.05", "eccErrors": 0}


def test_the_control_file_sets_utilization_and_processes_seen_by_the_heartbeat(machine):
    machine(utilization=80, processes=1)

    beat = agent().heartbeat_report()

    assert beat["healthy"] is True
    assert {g["utilizationPercent"] for g in beat["gpus"]} == {80}
    assert {g["processes"] for g in beat["gpus"]} == {1}
    assert beat["gpus"][0]["memoryUsedMib"] == 23028 * 80 // 100


def test_default_json_applies_to_machines_without_a_file_of_their_own(machine):
    machine("default", utilization=30)
    assert agent().heartbeat_report()["gpus"][0]["utilizationPercent"] == 30

    machine(utilization=0)  # the machine's own file wins
    assert agent().heartbeat_report()["gpus"][0]["utilizationPercent"] == 0


def test_a_machine_with_other_gpus_reports_them_as_they_are(machine):
    machine(name="Tesla T4")

    report = agent().gpu_report()

    assert report["ok"] is True
    assert {g["name"] for g in report["gpus"]} == {"Tesla T4"}


def test_an_unhealthy_machine_reports_the_drivers_failure(machine):
    machine(healthy=False)

    report = agent().gpu_report()
    beat = agent().heartbeat_report()

    assert report["ok"] is False
    assert report["error"].startswith("nvidia-smi failed (exit code 9): NVIDIA-SMI has failed")
    assert (beat["healthy"], beat["gpus"]) == (False, [])


def test_a_slow_nvidia_smi_is_given_up_at_the_command_timeout(machine):
    machine(delaySeconds=5)

    report = agent(commandTimeoutSeconds=0.5).gpu_report()

    assert report["ok"] is False
    assert report["error"] == "nvidia-smi timed out after 0.5 s"


def test_garbled_output_is_a_failed_query_not_a_crash(machine):
    machine(garbage=True)

    report = agent().gpu_report()

    assert report["ok"] is False
    assert report["error"].startswith("unparseable nvidia-smi output")


def test_a_machine_without_nvidia_smi_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to run there

    report = agent().gpu_report()

    assert report["ok"] is False
    assert report["error"].startswith("nvidia-smi cannot run")
