"""Every failure of the command line prints the API's own explanation and exits with the code
of its kind: usage 2, refused 4, not found 5, unreachable 6."""

from __future__ import annotations

import socket

import pytest

from provisioner_cli.exit_codes import ExitCode

MISSING = "inst-00000000000000000000000000000000"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("args, complaint", [
    (["launch"], "Give either a TYPE or --gpu"),
    (["launch", "g4dn.xlarge", "--gpu", "T4"], "Give either a TYPE or --gpu"),
    (["launch", "g4dn.xlarge", "--gpus", "2"], "--gpus goes with --gpu"),
    (["launch", "--gpu", "T4", "--meta", "study"], "'study' is not KEY=VALUE"),
    (["activity", MISSING, "sleeping"], "'sleeping' is not one of"),
    (["status", "--status", "BUSY"], "'BUSY' is not one of"),
    (["limits", MISSING], "Give --idle, --lifetime or both"),
    (["costs", "--by", "week"], "'week' is not one of"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_a_bad_command_line_is_a_usage_error_and_sends_nothing(cli, api, args, complaint):
    result = cli(*args)

    assert result.exit_code == ExitCode.USAGE
    assert complaint in result.stderr
    assert api.call("GET", "/api/instances")[1]["items"] == []


def test_a_bad_token_is_refused_with_the_apis_detail(cli):
    result = cli("--token", "alice", "status", user=None)

    assert result.exit_code == ExitCode.REFUSED
    assert result.stderr.strip() == (
        "error: 401 Unauthorized: Bad bearer token; the local stage accepts "
        "'Bearer dev:<user-id>' or 'Bearer dev:<user-id>:admin'."
    )


def test_input_the_api_refuses_exits_4_and_launches_nothing(cli, api):
    result = cli("launch", "g4dn.xlarge", "--idle", "500")

    assert result.exit_code == ExitCode.REFUSED
    assert result.stderr.startswith("error: 400 Bad Request: Invalid request body: "
                                    "autoTerminateMinutes:")
    assert api.call("GET", "/api/instances")[1]["items"] == []


def test_an_unknown_type_is_refused_naming_it(cli):
    result = cli("launch", "g9.huge")

    assert result.exit_code == ExitCode.REFUSED
    assert "g9.huge" in result.stderr


def test_activity_on_a_stopped_instance_is_refused_as_a_conflict(cli):
    instance = cli.json("launch", "g4dn.xlarge", "--wait")
    cli.json("stop", instance["id"], "--wait")

    result = cli("activity", instance["id"], "running")

    assert result.exit_code == ExitCode.REFUSED
    assert result.stderr.startswith("error: 409 Conflict: Activity can be reported only for a "
                                    "READY or RUNNING instance; this one is TERMINATED.")


@pytest.mark.parametrize("command", [["status"], ["stop"], ["activity"]])
def test_an_unknown_id_exits_5(cli, command):
    args = [*command, MISSING] + (["running"] if command == ["activity"] else [])

    result = cli(*args)

    assert result.exit_code == ExitCode.NOT_FOUND
    assert f"error: 404 Not Found: No instance with id '{MISSING}'." in result.stderr


def test_another_users_instance_is_not_found_like_an_unknown_one(cli):
    bobs = cli.json("launch", "g4dn.xlarge", "--no-wait", user="bob")["id"]

    result = cli("stop", bobs)

    assert result.exit_code == ExitCode.NOT_FOUND
    assert cli.json("status", bobs, user="bob")[0]["status"] != "STOPPING"


def test_status_of_a_known_and_an_unknown_id_shows_the_known_one_and_exits_5(cli):
    known = cli.json("launch", "g4dn.xlarge", "--no-wait")["id"]

    result = cli("status", known, MISSING)

    assert result.exit_code == ExitCode.NOT_FOUND
    assert known in result.stdout
    assert MISSING in result.stderr


def test_an_api_nobody_serves_is_unreachable_exit_6(cli):
    api = f"http://127.0.0.1:{closed_port()}"

    result = cli("status", api=api, network=True)

    assert result.exit_code == ExitCode.UNREACHABLE
    assert result.stderr.startswith(f"error: Cannot reach the API at {api} (")
    assert "Is it running? Set --api or PROVISIONER_API." in result.stderr


def test_an_api_that_fails_exits_7_with_its_detail(cli, faults):
    faults.fail("stepfunctions", "StartExecution", "ServiceUnavailable")

    result = cli("launch", "g4dn.xlarge", "--no-wait")

    assert result.exit_code == ExitCode.SERVER_ERROR
    assert result.stderr.strip() == (
        "error: 503 Service Unavailable: The instance could not be started now; it was "
        "recorded as ERROR. Try again."
    )


def test_an_api_url_given_with_its_api_path_works_the_same(cli):
    result = cli("types", "--gpu", "V100", api="http://127.0.0.1:8000/api/")

    assert result.exit_code == 0, result.output
    assert "p3.2xlarge" in result.stdout
