"""The deployed reaper publishes what it sees as CloudWatch metrics (EMF lines on stdout)."""

from __future__ import annotations

import json


def emf_lines(captured: str) -> list[dict]:
    documents = []
    for line in captured.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


def test_a_tick_publishes_live_instances_by_status_and_the_burn_rate(api, aws, capsys):
    instance = api.provision(instanceType="g4dn.xlarge")
    aws.wait_for_workflows()
    assert api.get(instance["id"])["status"] == "READY"
    capsys.readouterr()

    report = api.tick()

    documents = emf_lines(capsys.readouterr().out)
    live = {d["Status"]: d["LiveInstances"] for d in documents if "LiveInstances" in d}
    assert live["READY"] == 1
    assert sum(live.values()) == 1
    [fleet] = [d for d in documents if "BurnRateUsdPerHour" in d]
    assert fleet["BurnRateUsdPerHour"] == 0.526
    assert fleet["StuckInstances"] == 0
    assert report["liveByStatus"] == {"READY": 1}
    assert report["burnRateUsdPerHour"] == "0.526"
