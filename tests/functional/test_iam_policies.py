"""Each function's IAM policy (.chalice/policies/) allows every AWS call its code makes.

The deployed functions run with `autogen_policy: false`: a call a policy file leaves out is
refused in AWS, and nothing here would notice, since moto authorises everything. So the calls
are recorded while a scenario runs through every function (the API, each workflow step, the
reaper), attributed to the function that made them, and each is checked against that
function's policy file with IAM's matching (actions and resources, wildcards; tag conditions
are left to AWS). Local names are mapped to the dev stage's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import boto3
import pytest

CHALICE_DIR = Path(__file__).resolve().parents[2] / ".chalice"
CONFIG = json.loads((CHALICE_DIR / "config.json").read_text())
DEV = CONFIG["stages"]["dev"]
ACCOUNT_REGION = "us-east-1:123456789012"
OPERATOR = "ops:admin"
# The state machines' names: instance-provisioner-<stage>-lifecycle, -release.
LOCAL_PREFIX, DEV_PREFIX = "instance-provisioner-local-", "instance-provisioner-dev-"
# TransactWriteItems is authorised per item, as the action each item is.
_TRANSACT_ACTIONS = {
    "Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}  # fmt: skip


@dataclass
class Recorder:
    """Every AWS call while recording, as (function, IAM action, resource ARN or None)."""

    router: Any
    names: dict[str, str]  # local resource name -> the dev stage's
    main_function: str = "api_handler"  # what the test's own thread runs
    calls: set[tuple[str, str, str | None]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def before_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        function = self.router.running() or self.main_function
        service = model.service_model.signing_name or model.service_model.service_name
        # The request as it will be sent: DynamoDB's, Step Functions' and EventBridge's
        # bodies are the call's parameters in JSON.
        body = params.get("body") or b"{}"
        arguments = json.loads(body) if service in ("dynamodb", "states", "events") else {}
        with self.lock:
            for action, resource in self._authorised(service, model.name, arguments):
                self.calls.add((function, action, resource))

    def _authorised(
        self, service: str, operation: str, params: dict[str, Any]
    ) -> Iterator[tuple[str, str | None]]:
        if service == "dynamodb":
            if operation == "TransactWriteItems":
                for item in params["TransactItems"]:
                    [(kind, body)] = item.items()
                    yield f"dynamodb:{_TRANSACT_ACTIONS[kind]}", self._table(body["TableName"])
            elif operation in ("BatchGetItem", "BatchWriteItem"):
                for table in params["RequestItems"]:
                    yield f"dynamodb:{operation}", self._table(table)
            else:
                yield f"dynamodb:{operation}", self._table(
                    params["TableName"], params.get("IndexName")
                )
        elif service == "states":
            arn = params.get("stateMachineArn") or params.get("executionArn") or ""
            yield f"states:{operation}", self._dev(arn.replace("123456789012", "*"))
        elif service == "events":
            for entry in params.get("Entries", []):
                bus = self._dev(entry.get("EventBusName", "default"))
                yield "events:PutEvents", f"arn:aws:events:{ACCOUNT_REGION}:event-bus/{bus}"
        else:  # EC2 and the rest: the action (their resources and conditions are AWS's)
            yield f"{service}:{operation}", None

    def _table(self, name: str, index: str | None = None) -> str:
        arn = f"arn:aws:dynamodb:{ACCOUNT_REGION}:table/{self._dev(name)}"
        return f"{arn}/index/{index}" if index else arn

    def _dev(self, name: str) -> str:
        """A table's or bus's name, or a state machine's ARN, as the dev stage has it."""
        if name in self.names:
            return self.names[name]
        return name.replace(f":{LOCAL_PREFIX}", f":{DEV_PREFIX}")


def allowed(statements: list[dict[str, Any]], action: str, resource: str | None) -> bool:
    for statement in statements:
        if statement["Effect"] != "Allow":
            continue
        if not any(fnmatchcase(action, a) for a in _listed(statement["Action"])):
            continue
        if resource is None or any(
            fnmatchcase(resource, r) for r in _listed(statement["Resource"])
        ):
            return True
    return False


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def policy_of(function: str) -> list[dict[str, Any]]:
    path = CHALICE_DIR / DEV["lambda_functions"][function]["iam_policy_file"]
    return json.loads(path.read_text())["Statement"]


@pytest.fixture
def recorder(aws, faults, botocore_session) -> Iterator[Recorder]:
    settings = aws.settings
    names = {
        settings.table_name: DEV["environment_variables"]["INSTANCES_TABLE_NAME"],
        settings.control_table_name: DEV["environment_variables"]["CONTROL_TABLE_NAME"],
        settings.event_bus_name: DEV["environment_variables"]["EVENT_BUS_NAME"],
    }
    recording = Recorder(aws.router, names)
    # PynamoDB's clients are built on the session (after this: the container is lazy), the
    # service's boto3 clients are the test pool's, which answer through `faults`.
    botocore_session.register("before-call", recording.before_call)
    original = faults.before_call

    def before_call(**kwargs: Any) -> Any:
        recording.before_call(**kwargs)
        return original(**kwargs)

    faults.before_call = before_call  # type: ignore[method-assign]
    try:
        yield recording
    finally:
        botocore_session.unregister("before-call", recording.before_call)


def test_every_call_of_every_function_is_allowed_by_its_policy(
    api, aws, agents, clock, recorder, faults, untracked_machine
):
    # The API: limits, an idempotent provision, reads through every index, a change.
    assert api.call("PUT", "/api/users/alice/limits", user=OPERATOR, body={
        "maxLiveInstances": 5, "monthlyBudgetUsd": "2.00", "budgetAction": "stop",
    })[0] == 200
    status, first, _ = api.call("POST", "/api/instances", headers={"Idempotency-Key": "k-1"},
                                body={"instanceType": "p3.2xlarge", "taskId": "scan-1"})
    assert status == 202
    aws.wait_for_workflows()  # the lifecycle's steps: launch, checks, marks, the agent's check
    instance_id = first["id"]
    for path in ("/api/instances?status=READY", "/api/instances?taskId=scan-1",
                 f"/api/instances/{instance_id}", "/api/instances/stats", "/api/costs",
                 "/api/users/alice/limits", "/api/instance-types"):
        assert api.call("GET", path)[0] == 200, path
    for path in ("/api/instances", "/api/instances?userId=alice&status=READY",
                 "/api/instances?status=READY", "/api/instances/stats", "/api/costs",
                 "/api/costs?userId=alice", "/api/users/alice/limits"):
        assert api.call("GET", path, user=OPERATOR)[0] == 200, path
    assert api.call("PATCH", f"/api/instances/{instance_id}",
                    body={"autoTerminateMinutes": 60})[0] == 200
    assert api.call("POST", f"/api/instances/{instance_id}/activity",
                    body={"state": "running"})[0] == 200
    assert agents.heartbeat(instance_id, utilization=90)[0] == 200

    # A launch the cloud refuses: the error step releases what it can and records ERROR.
    faults.fail("ec2", "RunInstances", "InsufficientInstanceCapacity")
    failed = api.provision(instanceType="g4dn.xlarge")
    aws.wait_for_workflows()
    assert api.get(failed["id"])["status"] == "ERROR"

    # DELETE of a live instance: the release workflow's step terminates it at once; its
    # usage is not given back (the write is refused), which the tick repairs below.
    second = api.provision(instanceType="g4dn.xlarge")
    aws.wait_for_workflows()
    faults.fail("dynamodb", "UpdateItem", "AccessDeniedException")
    assert api.call("DELETE", f"/api/instances/{second['id']}")[0] == 202
    aws.wait_for_workflows()
    assert api.get(second["id"])["status"] == "TERMINATED"

    # A retried launch of a record finished meanwhile finds its machine by its tag: it
    # releases the machine and bills the record for it (the finished totals take the bill).
    faults.fail("ec2", "RunInstances", "InsufficientInstanceCapacity")
    late = api.provision(instanceType="g4dn.xlarge")
    aws.wait_for_workflows()
    untracked_machine(late["id"])
    recorder.main_function = "launch_instance"
    aws.router.handlers["launch_instance"]({"instanceId": late["id"]}, None)
    recorder.main_function = "api_handler"
    assert api.get(late["id"])["cloudResourceId"] is not None

    # The reaper: the spent budget stops the instance; an orphan of a finished record is
    # terminated and billed to it; the tick leaves its totals.
    clock.advance(minutes=50)
    recorder.main_function = "reaper"
    report = api.tick()
    aws.wait_for_workflows()
    assert report["stoppedBudgetExhausted"] == [instance_id]
    assert report["usageRepaired"] == [second["id"]]
    ec2 = boto3.client("ec2", region_name=aws.settings.region)
    tags = [{"Key": "provisioner:managed", "Value": "true"},
            {"Key": "provisioner:deployment", "Value": aws.settings.deployment_name},
            {"Key": "provisioner:record-id", "Value": failed["id"]}]
    ec2.run_instances(ImageId=aws.settings.ec2.ami_id, MinCount=1, MaxCount=1,
                      InstanceType="g4dn.xlarge",
                      TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    clock.advance(minutes=5)
    assert len(api.tick()["orphansTerminated"]) == 1

    functions = {function for function, _, _ in recorder.calls}
    assert functions == set(DEV["lambda_functions"]), "the scenario runs every function"
    refused = sorted(
        (function, action, resource or "*")
        for function, action, resource in recorder.calls
        if not allowed(policy_of(function), action, resource)
    )
    assert refused == [], "\n".join(map(str, refused))


def test_the_check_itself_refuses_what_a_policy_leaves_out():
    statements = [{
        "Effect": "Allow", "Action": ["dynamodb:GetItem"],
        "Resource": "arn:aws:dynamodb:*:*:table/instance-provisioner-dev-instances",
    }]
    table = f"arn:aws:dynamodb:{ACCOUNT_REGION}:table/instance-provisioner-dev-instances"

    assert allowed(statements, "dynamodb:GetItem", table)
    assert not allowed(statements, "dynamodb:UpdateItem", table)
    assert not allowed(statements, "dynamodb:GetItem", table.replace("instances", "control"))
    assert not allowed(statements, "dynamodb:GetItem", table + "/index/by-user")
