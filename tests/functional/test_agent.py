"""The machine speaks for itself (issue 11): READY only after the agent reported the catalog's
GPUs, idleness from the GPUs' own utilization, and agent routes that only the instance's own
agent can call. The lifecycle runs in the emulation; the agents are played through the real
routes with the secret each found in its machine's user data (tests/simulated_agents.py)."""

from __future__ import annotations

import base64

import boto3

from chalicelib import bootstrap
from chalicelib.services.agent_bootstrap import USER_DATA_LIMIT, parse_agent_config
from tests.simulated_agents import NO_DRIVER, SILENT, WRONG_GPU


def ready_instance(api, aws, **body) -> dict:
    instance = api.provision(**body)
    aws.wait_for_workflows()
    ready = api.get(instance["id"])
    assert ready["status"] == "READY", ready
    return ready


def machine_state(aws, instance: dict) -> str:
    ec2 = boto3.client("ec2", region_name=aws.settings.region)
    [reservation] = ec2.describe_instances(InstanceIds=[instance["cloudResourceId"]])[
        "Reservations"
    ]
    return reservation["Instances"][0]["State"]["Name"]


def agent_call(api, instance_id: str, route: str, secret: str | None, body: dict, **headers):
    authorization = {"Authorization": f"Agent {secret}"} if secret is not None else {}
    return api.call(
        "POST", f"/api/agent/instances/{instance_id}/{route}", user=None, body=body,
        headers={**authorization, **headers},
    )


IDLE_BEAT = {"gpus": [{"index": 0, "utilizationPercent": 0, "memoryUsedMib": 0,
                       "processes": 0}], "healthy": True}


# -- readiness ------------------------------------------------------------------------


def test_ready_follows_the_agents_report_of_the_catalogs_gpus_and_the_record_shows_them(
    api, aws, agents
):
    instance = ready_instance(api, aws)

    assert instance["agent"]["ok"] is True
    assert instance["agent"]["gpus"] == [{
        "index": 0, "name": "Tesla T4", "memoryTotalMib": 15360,
        "driverVersion": "535.104.05", "eccErrors": 0,
    }]
    assert agents.booted == [instance["id"]]


def test_a_machine_whose_gpus_are_not_the_catalogs_ends_in_gpu_check_failed_and_is_released(
    api, aws, agents
):
    agents.behaviour["default"] = WRONG_GPU
    instance = api.provision()
    aws.wait_for_workflows()

    failed = api.get(instance["id"])
    assert (failed["status"], failed["statusReason"]) == ("ERROR", "gpu_check_failed: "
            "expected 1 x T4, the machine has 1 (NVIDIA A10G)")
    assert machine_state(aws, failed) in ("shutting-down", "terminated")


def test_a_machine_without_a_working_driver_ends_in_gpu_check_failed_and_is_released(
    api, aws, agents
):
    agents.behaviour["default"] = NO_DRIVER
    instance = api.provision()
    aws.wait_for_workflows()

    failed = api.get(instance["id"])
    assert failed["status"] == "ERROR"
    assert failed["statusReason"].startswith(
        "gpu_check_failed: the agent could not query the GPUs (nvidia-smi failed (exit code 9)"
    )
    assert failed["agent"]["ok"] is False
    assert machine_state(aws, failed) in ("shutting-down", "terminated")


def test_an_agent_that_never_reports_ends_in_agent_timeout_and_the_machine_is_released(
    api, aws, agents, clock
):
    agents.behaviour["default"] = SILENT
    checks = []

    def a_minute_passes_at_each_check(name, event):
        if name == "check_instance_agent":
            checks.append(event["instanceId"])
            clock.advance(minutes=1)
        agents.before_step(name, event)

    aws.router.before_step = a_minute_passes_at_each_check
    instance = api.provision()
    aws.wait_for_workflows()

    failed = api.get(instance["id"])
    assert (failed["status"], failed["statusReason"]) == (
        "ERROR", "agent_timeout: the agent on the machine did not report within 15 minutes"
    )
    assert len(checks) == 15  # it waited the 15 minutes of AGENT_READY_TIMEOUT_MINUTES
    assert machine_state(aws, failed) in ("shutting-down", "terminated")


def test_the_user_data_carries_the_agent_its_url_and_a_secret_the_record_keeps_only_hashed(
    api, aws, agents
):
    instance = ready_instance(api, aws)
    ec2 = boto3.client("ec2", region_name=aws.settings.region)
    encoded = ec2.describe_instance_attribute(
        InstanceId=instance["cloudResourceId"], Attribute="userData"
    )["UserData"]["Value"]
    text = base64.b64decode(encoded).decode()

    config = parse_agent_config(text)
    assert config is not None
    assert config["instanceId"] == instance["id"]
    assert len(text.encode()) < USER_DATA_LIMIT
    record = bootstrap.container().repository.get(instance["id"])
    assert record.agent_secret_hash and config["secret"] not in record.agent_secret_hash
    assert config["secret"] not in str(api.get(instance["id"]))
    assert "metadata" not in text


def test_nothing_of_a_requests_metadata_reaches_the_user_data_or_the_tags(api, aws, agents):
    instance = ready_instance(api, aws, metadata={"patient": "jane-doe-1961"})
    ec2 = boto3.client("ec2", region_name=aws.settings.region)
    machine = ec2.describe_instances(InstanceIds=[instance["cloudResourceId"]])[
        "Reservations"][0]["Instances"][0]
    encoded = ec2.describe_instance_attribute(
        InstanceId=instance["cloudResourceId"], Attribute="userData"
    )["UserData"]["Value"]

    assert "jane-doe" not in base64.b64decode(encoded).decode()
    assert "jane-doe" not in str(machine.get("Tags"))


# -- who may call the agent routes ----------------------------------------------------


def test_an_agent_route_refuses_a_user_token_a_missing_secret_and_another_instances_secret(
    api, aws, agents
):
    mine = ready_instance(api, aws)
    other = ready_instance(api, aws)
    others_secret = agents.config_of(other["id"])["secret"]

    for status, body, headers in (
        agent_call(api, mine["id"], "heartbeat", None, IDLE_BEAT,
                   Authorization="Bearer dev:alice"),
        agent_call(api, mine["id"], "heartbeat", None, IDLE_BEAT),
        agent_call(api, mine["id"], "heartbeat", others_secret, IDLE_BEAT),
        agent_call(api, "inst-" + "0" * 32, "heartbeat", others_secret, IDLE_BEAT),
        agent_call(api, "not-an-id", "heartbeat", others_secret, IDLE_BEAT),
    ):
        assert status == 401, body
        assert body["error"] == "agent_unauthorized"
        assert headers["WWW-Authenticate"].startswith("Agent")
    assert api.get(mine["id"])["agent"]["lastHeartbeatAt"] is None


def test_an_agent_secret_opens_no_user_route(api, aws, agents):
    instance = ready_instance(api, aws)
    secret = agents.config_of(instance["id"])["secret"]

    for path in (f"/api/instances/{instance['id']}", "/api/instances"):
        status, _, _ = api.call("GET", path, user=None, headers={
            "Authorization": f"Agent {secret}"})
        assert status == 401


def test_a_malformed_heartbeat_gets_a_400_naming_the_field(api, aws, agents):
    instance = ready_instance(api, aws)
    secret = agents.config_of(instance["id"])["secret"]

    status, body, _ = agent_call(api, instance["id"], "heartbeat", secret, {
        "gpus": [{"index": 0, "utilizationPercent": 250, "memoryUsedMib": 0, "processes": 0}]})

    assert status == 400
    assert "utilizationPercent" in body["detail"]


def test_the_agent_of_a_finished_instance_is_told_to_stop_its_machine_with_410(
    api, aws, agents
):
    instance = ready_instance(api, aws)
    secret = agents.config_of(instance["id"])["secret"]
    api.call("DELETE", f"/api/instances/{instance['id']}")
    aws.wait_for_workflows()

    status, body, _ = agent_call(api, instance["id"], "heartbeat", secret, IDLE_BEAT)

    assert status == 410
    assert body["error"] == "instance_finished"


def test_a_heartbeat_answers_the_agents_period_dead_man_delay_and_lifetime(api, aws, agents):
    instance = ready_instance(api, aws, autoTerminateMinutes=45, maxLifetimeMinutes=120)

    status, body = agents.heartbeat(instance["id"], utilization=0)

    assert status == 200
    assert body == {"status": "READY", "heartbeatSeconds": 60, "deadmanSeconds": 55 * 60,
                    "lifetimeDeadline": "2026-03-02T11:00:00.000Z", "stop": False}


# -- idleness from the GPUs -----------------------------------------------------------


def test_a_busy_gpu_is_never_stopped_for_idleness_even_if_the_client_never_reports(
    api, aws, agents, clock
):
    instance = ready_instance(api, aws, autoTerminateMinutes=30, maxLifetimeMinutes=600)

    for _ in range(24):  # two hours of a long analysis at 97 %, no /activity call
        clock.advance(minutes=5)
        agents.heartbeat(instance["id"], utilization=97)
        api.tick()

    busy = api.get(instance["id"])
    assert busy["status"] == "READY"
    assert busy["lastEvidence"] == {"at": "2026-03-02T11:00:00.000Z", "source": "gpu"}
    assert busy["agent"]["utilization"][0]["utilizationPercent"] == 97


def test_a_gpu_process_at_low_utilization_is_evidence_of_activity(api, aws, agents, clock):
    instance = ready_instance(api, aws, autoTerminateMinutes=30)

    for _ in range(12):  # a job loading its data: a process on the GPU, 1 % busy
        clock.advance(minutes=5)
        agents.heartbeat(instance["id"], utilization=1, processes=1)
        api.tick()

    assert api.get(instance["id"])["status"] == "READY"


def test_gpus_at_zero_are_stopped_at_the_idle_timeout_though_heartbeats_keep_coming(
    api, aws, agents, clock
):
    instance = ready_instance(api, aws, autoTerminateMinutes=30)

    for _ in range(7):
        clock.advance(minutes=5)
        agents.heartbeat(instance["id"], utilization=0)
        api.tick()

    stopped = api.get(instance["id"])
    assert (stopped["status"], stopped["statusReason"]) == ("TERMINATED", "idle_timeout")
    assert stopped["billing"]["endedAt"] == "2026-03-02T09:30:00.000Z"


def test_the_last_evidence_says_whether_the_client_or_the_gpu_gave_it(
    api, aws, agents, clock
):
    instance = ready_instance(api, aws)
    clock.advance(minutes=3)
    api.call("POST", f"/api/instances/{instance['id']}/activity", body={"state": "running"})
    assert api.get(instance["id"])["lastEvidence"]["source"] == "client"

    clock.advance(minutes=3)
    agents.heartbeat(instance["id"], utilization=60)

    assert api.get(instance["id"])["lastEvidence"] == {
        "at": "2026-03-02T09:06:00.000Z", "source": "gpu"}
