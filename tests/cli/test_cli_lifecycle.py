"""A user's session with the command line: launch and wait, see it listed, stop it and see
what it cost, with the lifecycle and release workflows running in the emulation."""

from __future__ import annotations

import json
import re

import httpx

from provisioner_cli.exit_codes import ExitCode

# g4dn.xlarge billed for EC2's 60-second minimum: 0.526 $/h x 60 s.
MINIMUM_CHARGE = "0.008767"


def launched_id(cli, *args: str) -> str:
    instance = cli.json("launch", *args, "--no-wait")
    return str(instance["id"])


def test_launch_wait_follows_the_instance_to_ready_and_shows_how_to_reach_it(cli, api):
    result = cli("launch", "g4dn.xlarge", "--task", "scan-0042", "--wait")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    [record] = api.call("GET", "/api/instances")[1]["items"]
    assert record["status"] == "READY"
    progress = [line.split()[1] for line in lines if line.startswith(record["id"])]
    assert progress[0] == "PROVISIONING" and progress[-1] == "READY"
    assert set(progress) <= {"PROVISIONING", "CONFIGURING", "READY"}
    details = dict(line.rstrip().split(None, 1) for line in lines
                   if not line.startswith("inst-"))
    assert details["id"] == record["id"]
    assert details["type"] == "g4dn.xlarge (aws, us-east-1)"
    assert details["gpu"] == "1 x T4"
    assert record["publicIp"] is None  # machines get no public address by default
    assert details["ip"] == f"{record['privateIp']} (private)"
    assert details["rate"] == "$0.526/h"
    assert record["taskId"] == "scan-0042"


def test_launch_by_requirement_says_which_type_it_chose(cli, api):
    result = cli("launch", "--gpu", "T4", "--provider", "aws", "--no-wait")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Chose g4dn.xlarge (aws, 1 x T4) at $0.526/h; also "
                                    "matching: g4dn.12xlarge $3.912/h")
    [record] = api.call("GET", "/api/instances")[1]["items"]
    assert record["instanceType"] == "g4dn.xlarge"


def test_launch_sends_the_limits_task_and_metadata_given(cli, api):
    instance_id = launched_id(cli, "p3.2xlarge", "--idle", "15", "--lifetime", "60",
                              "--meta", "study=CT-7781", "--meta", "site=lyon")

    record = api.get(instance_id)
    assert (record["autoTerminateMinutes"], record["maxLifetimeMinutes"]) == (15, 60)
    assert record["metadata"] == {"study": "CT-7781", "site": "lyon"}


def test_a_launch_resent_with_its_idempotency_key_launches_nothing_new(cli, api):
    first = cli.json("launch", "g4dn.xlarge", "--idempotency-key", "job-7f3a", "--no-wait")

    again = cli("launch", "g4dn.xlarge", "--idempotency-key", "job-7f3a", "--no-wait")

    assert again.exit_code == 0, again.output
    assert "Idempotency-Key job-7f3a was used before" in again.stdout
    assert again.stdout.splitlines()[1].startswith(first["id"])
    assert len(api.call("GET", "/api/instances")[1]["items"]) == 1


def test_status_lists_the_instance_with_its_age_idle_time_left_and_cost(cli, api, clock):
    instance_id = launched_id(cli, "g4dn.xlarge", "--idle", "15")
    cli.aws.wait_for_workflows()
    clock.advance(minutes=2)  # READY since its launch two minutes ago

    result = cli("status")

    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "TYPE", "PROVIDER", "STATUS", "AGE", "IDLE", "LEFT", "COST"]
    cost = api.get(instance_id)["costUsd"]
    assert row.split() == [instance_id, "g4dn.xlarge", "aws", "READY", "2m00s", "13m00s",
                           f"${cost}"]
    assert cost == "0.017533"  # 120 s at 0.526 $/h


def test_status_of_ids_and_filters(cli, api):
    ready = launched_id(cli, "g4dn.xlarge", "--task", "a")
    cli.sleep(1)
    other = launched_id(cli, "p3.2xlarge", "--task", "b")
    cli.sleep(1)

    by_id = cli.json("status", other)
    by_task = cli.json("status", "--task", "a")
    by_status = cli.json("status", "--status", "READY")

    assert [i["id"] for i in by_id] == [other]
    assert [i["id"] for i in by_task["items"]] == [ready]
    assert [i["id"] for i in by_status["items"]] == [other, ready]


def test_status_all_shows_an_operator_every_users_instances_and_only_theirs_without(cli):
    alices = launched_id(cli, "g4dn.xlarge")
    bobs = cli.json("launch", "g4dn.xlarge", "--no-wait", user="bob")["id"]

    every = cli("status", "--all", user="ops:admin")
    own = cli.json("status", user="ops:admin")

    assert every.exit_code == 0, every.output
    rows = [line.split() for line in every.stdout.splitlines()[1:]]
    assert sorted((row[0], row[1]) for row in rows) == sorted([(alices, "alice"),
                                                               (bobs, "bob")])
    assert own["items"] == []


def test_stop_wait_follows_each_instance_to_terminated_and_shows_its_final_cost(cli, api):
    instance_id = launched_id(cli, "g4dn.xlarge")
    cli.sleep(1)

    result = cli("stop", instance_id, "--wait")

    assert result.exit_code == 0, result.output
    record = api.get(instance_id)
    assert record["status"] == "TERMINATED"
    assert record["costUsd"] == MINIMUM_CHARGE
    last = result.stdout.splitlines()[-1]
    assert re.fullmatch(rf"{instance_id}  TERMINATED \(user_request\)  final cost "
                        rf"\${MINIMUM_CHARGE} \(ran \d+s, billed 1m00s\)", last)
    progress = [line.split()[1] for line in result.stdout.splitlines()[:-1]]
    assert progress[0] == "STOPPING" and progress[-1] == "TERMINATED"


def test_stop_several_as_json_without_waiting(cli, api):
    first, second = launched_id(cli, "g4dn.xlarge"), launched_id(cli, "p3.2xlarge")
    cli.sleep(1)

    stopped = cli.json("stop", first, second)

    assert [(i["id"], i["status"]) for i in stopped] == [(first, "STOPPING"),
                                                         (second, "STOPPING")]


def test_activity_moves_an_instance_between_ready_and_running(cli, api):
    instance_id = launched_id(cli, "g4dn.xlarge", "--idle", "20")
    cli.sleep(1)

    running = cli("activity", instance_id, "running")
    idle = cli.json("activity", instance_id, "idle")

    assert running.exit_code == 0, running.output
    assert running.stdout.strip() == f"{instance_id}  RUNNING  idle stop in 20m00s"
    assert idle["status"] == "READY"
    assert api.get(instance_id)["status"] == "READY"


def test_limits_change_a_live_instances_idle_timeout(cli, api):
    instance_id = launched_id(cli, "g4dn.xlarge")
    cli.sleep(1)

    changed = cli.json("limits", instance_id, "--idle", "45")

    assert changed["autoTerminateMinutes"] == 45
    assert api.get(instance_id)["autoTerminateMinutes"] == 45


def test_ctrl_c_while_waiting_asks_and_stops_the_instance_when_told_to(cli, api):
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    result = cli("launch", "g4dn.xlarge", "--wait", sleep=interrupted, input="y\n")

    assert result.exit_code == ExitCode.INTERRUPTED
    [record] = api.call("GET", "/api/instances")[1]["items"]
    assert f"Stop {record['id']} now? [y/N]" in result.stderr
    assert record["status"] in ("STOPPING", "TERMINATED")
    assert record["statusReason"] == "user_request"


def test_ctrl_c_while_waiting_leaves_the_instance_running_when_told_not_to(cli, api):
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    result = cli("launch", "g4dn.xlarge", "--wait", sleep=interrupted, input="n\n")

    assert result.exit_code == ExitCode.INTERRUPTED
    [record] = api.call("GET", "/api/instances")[1]["items"]
    assert f"{record['id']} keeps running; stop it with: provisioner stop {record['id']}" in (
        result.stderr)
    cli.aws.wait_for_workflows()
    assert api.get(record["id"])["status"] == "READY"


def test_a_launch_that_ends_in_error_exits_3_with_the_reason(cli, faults):
    faults.fail("ec2", "RunInstances", "InsufficientInstanceCapacity")

    result = cli("launch", "g4dn.xlarge", "--wait")

    assert result.exit_code == ExitCode.INSTANCE_FAILED
    assert "ended ERROR: launch_failed: the cloud refused the launch " \
           "(InsufficientInstanceCapacity)" in result.stderr


def test_every_json_answer_parses(cli):
    launched = cli.json("launch", "g4dn.xlarge", "--wait")
    listed = cli.json("status")
    figures = cli.json("stats")
    catalog = cli.json("types", "--gpu", "T4", "--provider", "aws")
    stopped = cli.json("stop", launched["id"], "--wait")

    assert launched["status"] == "READY"
    assert [i["id"] for i in listed["items"]] == [launched["id"]]
    assert figures["live"] == 1 and figures["byStatus"]["READY"] == 1
    assert [t["name"] for t in catalog["items"]] == ["g4dn.xlarge", "g4dn.12xlarge"]
    assert stopped[0]["status"] == "TERMINATED"
    assert json.loads(json.dumps(stopped)) == stopped


def test_status_watch_prints_the_table_again_until_ctrl_c(cli):
    instance_id = launched_id(cli, "g4dn.xlarge")
    refreshes: list[float] = []

    def then_interrupt(seconds: float) -> None:
        refreshes.append(seconds)
        if len(refreshes) == 2:
            raise KeyboardInterrupt
        cli.sleep(seconds)

    result = cli("status", "--watch", "--interval", "5", sleep=then_interrupt)

    assert result.exit_code == 0, result.output
    shown = [line.split()[3] for line in result.stdout.splitlines() if line.startswith("inst-")]
    assert len(shown) == 2 and shown[-1] == "READY"
    assert refreshes == [5, 5]
    assert instance_id in result.stdout


def test_on_a_terminal_the_wait_is_one_live_line_that_ends_ready(cli, api):
    result = cli("launch", "g4dn.xlarge", "--wait", terminal=True)

    assert result.exit_code == 0, result.output
    [record] = api.call("GET", "/api/instances")[1]["items"]
    assert record["status"] == "READY"
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)  # the terminal's codes
    assert f"{record['id']}  PROVISIONING -> " in screen
    assert "-> READY  " in screen
    assert f"\n{record['id']}  PROVISIONING  " not in screen  # no plain progress lines
    assert "$0.526/h" in screen


class AnswerLostOnce(httpx.BaseTransport):
    """The network between the command and the API: the first POST reaches the API, whose
    answer is then lost (the connection drops while it is read)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.posts: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST":
            self.posts.append(request.headers.get("Idempotency-Key"))
            if len(self.posts) == 1:
                raise httpx.ReadError("connection reset while reading the answer")
        return response


def test_a_launch_whose_answer_is_lost_is_sent_again_with_its_key_and_launches_once(cli, api):
    lossy = AnswerLostOnce(cli.transport)
    cli.transport = lossy

    launched = cli.json("launch", "g4dn.xlarge", "--no-wait")

    first_key, second_key = lossy.posts
    assert first_key == second_key and first_key
    assert [i["id"] for i in api.call("GET", "/api/instances")[1]["items"]] == [launched["id"]]


def test_on_a_terminal_status_watch_redraws_the_table_in_place_until_ctrl_c(cli):
    instance_id = launched_id(cli, "g4dn.xlarge")
    refreshes: list[float] = []

    def then_interrupt(seconds: float) -> None:
        refreshes.append(seconds)
        if len(refreshes) == 2:
            raise KeyboardInterrupt
        cli.sleep(seconds)

    result = cli("status", "--watch", sleep=then_interrupt, terminal=True)

    assert result.exit_code == 0, result.output
    assert refreshes == [2.0, 2.0]
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)
    assert "-- " not in screen  # no timestamped reprints: one table, redrawn
    assert instance_id in screen and "READY" in screen
