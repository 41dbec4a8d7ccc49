"""`make package` builds a deployable stack: cfn-lint accepts it, and the wiring is right.

The package is built once per test session (shared by the xdist workers) from a copy of
the project whose requirements.txt is empty: the template does not depend on the
dependencies, and so the build needs no network, no AWS account (the Makefile gives a dummy
region and credentials) and never races another build over Chalice's cache in
.chalice/deployments. The full deployment.zip is measured by `make package` itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from chalicelib import metrics
from chalicelib.persistence.control import TTL_ATTRIBUTE, ControlItem
from chalicelib.persistence.dynamodb import InstanceModel
from chalicelib.services.reaper import TickReport
from chalicelib.settings import Settings
from chalicelib.workflow.stepfunctions import LIFECYCLE, RELEASE, WORKFLOWS, WorkflowDefinition
from tools import render_merge_template
from tools.lint_template import sam_transform
from tools.render_merge_template import (
    CHALICE_DIR,
    PROJECT_DIR,
    RenderError,
    bound_to_stack,
    function_resource,
    render,
    role_resource,
    state_machine_resource,
)

STAGE = "prod"
CONFIG = json.loads((CHALICE_DIR / "config.json").read_text())
DEPLOYMENT = CONFIG["stages"][STAGE]["environment_variables"]["DEPLOYMENT_NAME"]
STEP_FUNCTIONS = {name for workflow in WORKFLOWS for name in workflow.task_functions.values()}
CLOUD_CALLERS = (
    STEP_FUNCTIONS - {"mark_instance_configuring", "check_instance_agent", "mark_instance_ready"}
) | {
    "reaper",
}
# Each function that may terminate a machine, and why: a launch that lost a race, a failed
# launch, a tick (idle, stopped, orphan), a DELETE.
TERMINATORS = {"launch_instance", "record_instance_error", "reaper", "release_instance"}
# Without a Cognito token: the OpenAPI document, and the agent routes (the instance's own
# agent secret, checked by the route).
PUBLIC_PATHS = {
    "/api/openapi.json",
    "/api/agent/instances/{instance_id}/ready",
    "/api/agent/instances/{instance_id}/heartbeat",
}
# What CloudFormation substitutes for the pseudo parameters, to read an environment as a
# deployed function does.
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "111122223333",
    "AWS::URLSuffix": "amazonaws.com",
    "RestAPI": "a1b2c3d4e5",  # the API's id
}


@dataclass
class Package:
    directory: Path
    make_output: str
    make_status: int

    @cached_property
    def template(self) -> dict[str, Any]:
        assert self.make_status == 0, self.make_output
        return json.loads((self.directory / "sam.json").read_text())

    @cached_property
    def transformed(self) -> dict[str, Any]:
        return sam_transform(self.template)

    @property
    def resources(self) -> dict[str, Any]:
        return self.template["Resources"]

    def function(self, name: str) -> dict[str, Any]:
        return self.resources[function_resource(name)]

    def statements(self, function_name: str) -> list[dict[str, Any]]:
        [policy] = self.resources[role_resource(function_name)]["Properties"]["Policies"]
        return policy["PolicyDocument"]["Statement"]


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # Under xdist every worker has its own base; their parent is common to the session.
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _project_copy(target: Path) -> Path:
    """What `make package` reads, with no dependency to download."""
    ignore = shutil.ignore_patterns("__pycache__", "deployments", "*.pyc")
    for directory in ("chalicelib", "tools", ".chalice"):
        shutil.copytree(PROJECT_DIR / directory, target / directory, ignore=ignore)
    for name in ("app.py", "Makefile"):
        shutil.copy2(PROJECT_DIR / name, target / name)
    (target / "requirements.txt").write_text("# none: the tests package the app code only\n")
    return target


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Package]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = _shared_root(tmp_path_factory)
    project = root / f"project-{STAGE}"
    with (root / f"package-{STAGE}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result_file = root / f"package-{STAGE}.json"
        if not result_file.exists():
            _project_copy(project)
            # STAMP= : the running environment as it is, never rebuilt mid-session.
            done = subprocess.run(
                [
                    "make", "--no-print-directory", "package", f"STAGE={STAGE}", "DIST=dist",
                    "STAMP=", f"BIN={Path(sys.executable).parent}",
                ],
                cwd=project, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            result_file.write_text(
                json.dumps({"status": done.returncode, "output": done.stdout + done.stderr})
            )
        result = json.loads(result_file.read_text())
    yield Package(project / "dist", result["output"], result["status"])


def sub_text(value: Any) -> str:
    """The text of a string or an Fn::Sub."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        return value["Fn::Sub"]
    assert isinstance(value, str), value
    return value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements for a in as_list(s["Action"])}


def same_items(left: list[dict[str, str]], right: list[dict[str, str]]) -> bool:
    """Two lists of key or attribute definitions hold the same ones, in any order."""
    return sorted(sorted(d.items()) for d in left) == sorted(sorted(d.items()) for d in right)


def deployed_value(value: Any, parameters: dict[str, str]) -> str:
    """A value of the template as CloudFormation resolves it: pseudo parameters, the given
    parameters, and every condition false (no optional parameter is set)."""
    if isinstance(value, str):
        return value
    [(function, argument)] = value.items()
    if function == "Ref":
        return {**PSEUDO, **parameters}[argument]
    if function == "Fn::Sub":
        return re.sub(r"\$\{([\w:]+)\}", lambda m: {**PSEUDO, **parameters}[m[1]], argument)
    if function == "Fn::If":
        return deployed_value(argument[2], parameters)
    raise AssertionError(f"unexpected {function} in {value}")


def arn_of_machine(machine: dict[str, Any]) -> str:
    return (
        f"arn:aws:states:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}"
        f":stateMachine:{machine['Properties']['StateMachineName']}"
    )


# -- the package as a whole -------------------------------------------------------------


def test_make_package_builds_a_template_cfn_lint_accepts_before_and_after_the_sam_transform(
    package,
):
    assert package.make_status == 0, package.make_output
    assert "cfn-lint: 0 errors" in package.make_output, package.make_output
    assert (package.directory / "deployment.zip").is_file()


def test_the_deployment_package_holds_the_app_and_nothing_of_the_build(package):
    with zipfile.ZipFile(package.directory / "deployment.zip") as bundle:
        names = bundle.namelist()

    assert {"app.py", "chalicelib/workflow/lifecycle.asl.json", "chalice/app.py"} <= set(names)
    # Nor the command line (provisioner_cli/), which runs on users' machines.
    outside = {"tests", "tools", "local", "bench", "provisioner_cli"}
    assert not [n for n in names if n.split("/")[0] in outside]


def test_the_template_holds_the_service_resources(package):
    types = {name: r["Type"] for name, r in package.resources.items()}

    assert types["InstancesTable"] == types["ControlTable"] == "AWS::DynamoDB::Table"
    assert types["LifecycleEventBus"] == "AWS::Events::EventBus"
    assert types["LifecycleStateMachine"] == "AWS::StepFunctions::StateMachine"
    assert types["ReleaseStateMachine"] == "AWS::StepFunctions::StateMachine"
    assert types["OperationsDashboard"] == "AWS::CloudWatch::Dashboard"
    assert sum(t == "AWS::CloudWatch::Alarm" for t in types.values()) >= 7
    functions = {n for n, t in types.items() if t == "AWS::Serverless::Function"}
    assert functions == {function_resource(n) for n in CONFIG["lambda_functions"]}


# -- the workflows ----------------------------------------------------------------------

each_workflow = pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)


@each_workflow
def test_each_state_machine_runs_its_local_asl_document_with_each_task_bound_to_its_function(
    package, workflow: WorkflowDefinition
):
    machine = package.resources[state_machine_resource(workflow)]["Properties"]
    text = workflow.definition_file.read_text()
    placeholders = set(re.findall(r"\$\{(\w+)\}", text))

    assert machine["Definition"] == json.loads(text)
    assert machine["StateMachineType"] == "STANDARD"
    assert set(machine["DefinitionSubstitutions"]) == placeholders == set(workflow.task_functions)
    for placeholder, function_name in workflow.task_functions.items():
        logical_id, attribute = machine["DefinitionSubstitutions"][placeholder]["Fn::GetAtt"]
        assert attribute == "Arn"
        function = package.resources[logical_id]
        assert function["Type"] == "AWS::Serverless::Function"
        assert function["Properties"]["Handler"] == f"app.{function_name}"


@each_workflow
def test_each_state_machine_logs_and_traces_and_its_role_may_invoke_only_its_own_functions(
    package, workflow: WorkflowDefinition
):
    machine = package.resources[state_machine_resource(workflow)]["Properties"]
    logs = package.resources[state_machine_resource(workflow, "Logs")]
    role = package.resources[state_machine_resource(workflow, "Role")]["Properties"]
    [policy] = role["Policies"]
    statements = policy["PolicyDocument"]["Statement"]
    invoke = [s for s in statements if "lambda" in str(s["Action"])]

    assert machine["TracingConfiguration"] == {"Enabled": True}
    assert machine["LoggingConfiguration"]["Level"] == "ALL"
    assert machine["LoggingConfiguration"]["IncludeExecutionData"] is False
    [destination] = machine["LoggingConfiguration"]["Destinations"]
    assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == {
        "Fn::GetAtt": [state_machine_resource(workflow, "Logs"), "Arn"]
    }
    assert logs["Properties"]["RetentionInDays"] == CONFIG["stages"][STAGE]["log_retention_in_days"]
    assert logs["DeletionPolicy"] == "Delete"
    assert machine["RoleArn"] == {"Fn::GetAtt": [state_machine_resource(workflow, "Role"), "Arn"]}
    assert [s["Action"] for s in invoke] == ["lambda:InvokeFunction"]
    assert sorted(r["Fn::GetAtt"][0] for r in invoke[0]["Resource"]) == sorted(
        function_resource(n) for n in workflow.task_functions.values()
    )
    others = actions([s for s in statements if s not in invoke])
    assert all(a.startswith(("logs:", "xray:")) for a in others), others


def test_the_release_state_machine_has_its_own_role_which_may_invoke_only_release_instance(package):
    role = package.resources["ReleaseStateMachineRole"]["Properties"]
    [policy] = role["Policies"]
    [invoke] = [s for s in policy["PolicyDocument"]["Statement"] if "lambda" in str(s["Action"])]

    assert invoke["Resource"] == [{"Fn::GetAtt": [function_resource("release_instance"), "Arn"]}]
    assert package.resources["ReleaseStateMachine"]["Properties"]["RoleArn"] != (
        package.resources["LifecycleStateMachine"]["Properties"]["RoleArn"]
    )


@each_workflow
def test_each_step_function_times_out_before_its_task_state_does(
    package, workflow: WorkflowDefinition
):
    states = json.loads(workflow.definition_file.read_text())["States"]
    tasks = [state for state in states.values() if state["Type"] == "Task"]
    assert tasks
    for state in tasks:
        placeholder = state["Resource"].strip("${}")
        function = package.function(workflow.task_functions[placeholder])["Properties"]
        assert function["Timeout"] < state["TimeoutSeconds"], placeholder


def test_every_function_reads_the_state_machines_tables_bus_and_deployment_of_its_stage(
    package,
):
    resources = package.resources
    shared = package.template["Globals"]["Function"]["Environment"]["Variables"]
    parameters = {name: f"<{name}>" for name in package.template["Parameters"]}
    for name in CONFIG["lambda_functions"]:
        variables = {**shared, **package.function(name)["Properties"]["Environment"]["Variables"]}
        settings = Settings.from_env(
            {key: deployed_value(value, parameters) for key, value in variables.items()}
        )

        assert settings.stage == STAGE, name
        assert settings.state_machine_arn == arn_of_machine(resources["LifecycleStateMachine"])
        assert settings.release_state_machine_arn == arn_of_machine(
            resources["ReleaseStateMachine"]
        )
        assert settings.table_name == resources["InstancesTable"]["Properties"]["TableName"]
        assert settings.control_table_name == resources["ControlTable"]["Properties"]["TableName"]
        assert settings.event_bus_name == resources["LifecycleEventBus"]["Properties"]["Name"]
        assert settings.deployment_name == DEPLOYMENT == f"instance-provisioner-{STAGE}"
        assert settings.ec2.ami_id == "<Ec2AmiId>"
        assert settings.azure.subscription_id == "<AzureSubscriptionId>"


def test_the_functions_that_call_a_cloud_and_only_they_get_the_azure_client_secret(package):
    secret = {
        "Fn::If": [
            "HasAzureClientSecret",
            {"Fn::Sub": "{{resolve:secretsmanager:${AzureClientSecretName}}}"},
            "",
        ]
    }
    for name in CONFIG["lambda_functions"]:
        variables = package.function(name)["Properties"]["Environment"]["Variables"]
        if name in CLOUD_CALLERS:
            assert variables["AZURE_CLIENT_SECRET"] == secret, name
        else:
            assert "AZURE_CLIENT_SECRET" not in variables, name
    assert "release_instance" in CLOUD_CALLERS


# -- the schedule -----------------------------------------------------------------------


def test_the_schedule_runs_the_reaper_every_minute(package):
    resources = package.transformed["Resources"].values()

    [rule] = [r for r in resources if r["Type"] == "AWS::Events::Rule"]
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function_resource("reaper"), "Arn"]}
    assert package.function("reaper")["Properties"]["Handler"] == "app.reaper"


def test_at_most_one_reaper_tick_runs_at_a_time(package):
    reserved = {
        name: package.function(name)["Properties"].get("ReservedConcurrentExecutions")
        for name in CONFIG["lambda_functions"]
    }

    assert reserved["reaper"] == CONFIG["lambda_functions"]["reaper"]["reserved_concurrency"] == 1
    assert {n for n, r in reserved.items() if r is not None} == {"reaper"}


# -- the table --------------------------------------------------------------------------


def test_the_table_has_the_models_keys_and_indexes_pitr_encryption_and_outlives_the_stack(
    package,
):
    table = package.resources["InstancesTable"]
    properties = table["Properties"]
    schema = InstanceModel._get_schema()

    def keys(key_schema: list[dict[str, str]]) -> set[tuple[str, str]]:
        return {(k["AttributeName"], k["KeyType"]) for k in key_schema}

    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert properties["DeletionProtectionEnabled"] is True  # no delete-table by mistake
    assert keys(properties["KeySchema"]) == keys(schema["key_schema"])
    def attributes(definitions: list[dict[str, str]]) -> set[tuple[str, str]]:
        return {(a["AttributeName"], a["AttributeType"]) for a in definitions}

    assert attributes(properties["AttributeDefinitions"]) == attributes(
        schema["attribute_definitions"]
    )
    indexes = {i["IndexName"]: i for i in properties["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"by-user", "by-task", "live-by-status", "by-billing-month",
                            "by-user-status"}
    for index in schema["global_secondary_indexes"]:
        deployed = indexes[index["index_name"]]
        assert keys(deployed["KeySchema"]) == keys(index["key_schema"])
        assert deployed["Projection"] == index["projection"] == {"ProjectionType": "ALL"}
    assert "TimeToLiveSpecification" not in properties  # records do not expire


def test_the_control_table_has_the_models_keys_expires_items_and_outlives_the_stack(package):
    table = package.resources["ControlTable"]
    properties = table["Properties"]
    schema = ControlItem._get_schema()

    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert properties["DeletionProtectionEnabled"] is True
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert properties["TimeToLiveSpecification"] == {
        "AttributeName": TTL_ATTRIBUTE, "Enabled": True
    }
    assert same_items(properties["KeySchema"], schema["key_schema"])
    assert same_items(properties["AttributeDefinitions"], schema["attribute_definitions"])
    assert [k["AttributeName"] for k in properties["KeySchema"]] == ["pk", "sk"]
    assert "GlobalSecondaryIndexes" not in properties


# -- IAM --------------------------------------------------------------------------------


def unbound(resource: Any) -> Any:
    """A policy Resource of the template written back as in the policy files."""
    if isinstance(resource, list):
        return [unbound(r) for r in resource]
    if not isinstance(resource, dict):
        return resource
    text = resource["Fn::Sub"].replace("${AWS::Partition}", "aws")
    return text.replace("${AWS::Region}", "*").replace("${AWS::AccountId}", "*")


def test_each_function_role_has_exactly_the_statements_of_its_policy_file(package):
    for name, function in CONFIG["stages"][STAGE]["lambda_functions"].items():
        document = json.loads((CHALICE_DIR / function["iam_policy_file"]).read_text())
        deployed = [
            {**s, "Resource": unbound(s["Resource"])} for s in package.statements(name)
        ]
        assert deployed == document["Statement"], name
        role = package.function(name)["Properties"]["Role"]
        assert role == {"Fn::GetAtt": [role_resource(name), "Arn"]}


def test_only_the_cloud_calling_functions_call_ec2_only_the_launch_launches(package):
    for name in CONFIG["lambda_functions"]:
        ec2 = {a for a in actions(package.statements(name)) if a.startswith("ec2:")}
        if name in CLOUD_CALLERS:
            assert "ec2:DescribeInstances" in ec2, name
        else:
            assert not ec2, name
        assert ("ec2:RunInstances" in ec2) == (name == "launch_instance"), name
        assert ("ec2:TerminateInstances" in ec2) == (name in TERMINATORS), name
        # The launch reads its image's root device, to launch it encrypted.
        assert ("ec2:DescribeImages" in ec2) == (name == "launch_instance"), name


def test_ec2_launches_and_tags_need_the_deployments_tags_and_so_do_terminations_on_the_target(
    package,
):
    tags = {"provisioner:managed": "true", "provisioner:deployment": DEPLOYMENT}
    checked: set[tuple[str, str]] = set()
    for name in CONFIG["lambda_functions"]:
        for statement in package.statements(name):
            granted = set(as_list(statement["Action"]))
            condition = statement.get("Condition", {}).get("StringEquals", {})
            targets = [sub_text(r) for r in as_list(statement["Resource"])]
            if "ec2:TerminateInstances" in granted:
                assert condition == {f"ec2:ResourceTag/{k}": v for k, v in tags.items()}, name
                assert all(t.endswith(":instance/*") for t in targets)
                checked.add((name, "ec2:TerminateInstances"))
            if "ec2:CreateTags" in granted:
                assert condition == {
                    "ec2:CreateAction": "RunInstances",
                    **{f"aws:RequestTag/{k}": v for k, v in tags.items()},
                }
                checked.add((name, "ec2:CreateTags"))
            if "ec2:RunInstances" in granted and any(
                t.endswith((":instance/*", ":volume/*")) for t in targets
            ):
                assert condition == {f"aws:RequestTag/{k}": v for k, v in tags.items()}
                checked.add((name, "ec2:RunInstances"))
            if targets == ["*"]:
                assert all(a.startswith(("ec2:Describe", "xray:")) for a in granted), statement

    assert {n for n, a in checked if a == "ec2:TerminateInstances"} == TERMINATORS
    assert {n for n, a in checked if a != "ec2:TerminateInstances"} == {"launch_instance"}


def test_only_the_api_starts_workflows_both_of_them_and_nothing_else_of_step_functions(package):
    machines = {
        package.resources[state_machine_resource(w)]["Properties"]["StateMachineName"]
        for w in WORKFLOWS
    }
    prefix = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:"
    for name in CONFIG["lambda_functions"]:
        step_functions = [
            s for s in package.statements(name)
            if any(a.startswith("states:") for a in as_list(s["Action"]))
        ]  # fmt: skip
        if name != "api_handler":
            assert not step_functions, name
            continue
        [start] = step_functions
        assert as_list(start["Action"]) == ["states:StartExecution"]
        targets = [sub_text(r) for r in as_list(start["Resource"])]
        assert all(t.startswith(prefix) for t in targets), targets
        assert {t.removeprefix(prefix) for t in targets} == machines
    assert machines == {f"instance-provisioner-{STAGE}-{w.name}" for w in (LIFECYCLE, RELEASE)}


def test_events_go_only_to_the_stages_bus(package):
    bus = package.resources["LifecycleEventBus"]["Properties"]["Name"]
    for name in CONFIG["lambda_functions"]:
        for statement in package.statements(name):
            granted = set(as_list(statement["Action"]))
            if "events:PutEvents" in granted:
                assert granted == {"events:PutEvents"}
                assert [sub_text(r) for r in as_list(statement["Resource"])] == [
                    f"arn:${{AWS::Partition}}:events:${{AWS::Region}}:${{AWS::AccountId}}"
                    f":event-bus/{bus}"
                ]


def test_dynamodb_rights_name_the_stages_tables_and_who_may_do_what_on_the_control_table(
    package,
):
    instances = package.resources["InstancesTable"]["Properties"]["TableName"]
    control = package.resources["ControlTable"]["Properties"]["TableName"]
    prefix = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/"
    on_control: dict[str, set[str]] = {}
    for name in CONFIG["lambda_functions"]:
        for statement in package.statements(name):
            granted = set(as_list(statement["Action"]))
            if not any(a.startswith("dynamodb:") for a in granted):
                continue
            tables = {
                sub_text(r).removeprefix(prefix).split("/")[0]
                for r in as_list(statement["Resource"])
            }
            assert all(sub_text(r).startswith(prefix) for r in as_list(statement["Resource"]))
            assert len(tables) == 1 and tables <= {instances, control}, statement
            if tables == {control}:
                on_control.setdefault(name, set()).update(granted)

    # The API keeps idempotency records, reserves quota usage, sets limits and reads the
    # finished totals (a Query of the usage items for an operator's stats); the reaper takes
    # and gives back its tick lease, reads limits and usage for the budget check, gives usage
    # back and repairs the usage a failed release kept (a Query of the usage items); the two
    # steps that finish records give usage back too, and they and the launch add the bill of
    # a finished record's machine found later to the finished totals.
    # tests/functional/test_iam_policies.py checks these against the calls the code makes.
    assert on_control == {
        "api_handler": {
            "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
            "dynamodb:Query",
        },
        "reaper": {
            "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
            "dynamodb:Query",
        },
        "launch_instance": {"dynamodb:UpdateItem"},
        "record_instance_error": {"dynamodb:UpdateItem"},
        "release_instance": {"dynamodb:UpdateItem"},
    }




# -- API --------------------------------------------------------------------------------


def test_every_route_but_the_openapi_document_requires_a_cognito_user_pool_token(package):
    body = package.resources["RestAPI"]["Properties"]["DefinitionBody"]
    [(name, authorizer)] = body["securityDefinitions"].items()

    assert authorizer["x-amazon-apigateway-authtype"] == "cognito_user_pools"
    assert authorizer["x-amazon-apigateway-authorizer"]["providerARNs"] == [{"Ref": "UserPoolArn"}]
    for path, methods in body["paths"].items():
        for method, operation in methods.items():
            expected = None if path in PUBLIC_PATHS else [{name: []}]
            assert operation.get("security") == expected, (method, path)


def test_the_app_attaches_the_authorizer_to_every_route_but_the_openapi_document():
    import app

    for path, methods in app.app.routes.items():
        for method, entry in methods.items():
            if path in PUBLIC_PATHS:
                assert entry.authorizer is None, (method, path)
            else:
                assert entry.authorizer is app.cognito, (method, path)


# -- alarms and dashboard ---------------------------------------------------------------


Series = tuple[str, str, frozenset[tuple[str, str]]]  # namespace, metric, dimensions


def published_series() -> set[Series]:
    """Each series a reaper tick publishes, read from its EMF documents as CloudWatch does."""
    records = metrics.tick_records(TickReport(), STAGE, datetime(2026, 3, 2, tzinfo=UTC))
    return {
        (directive["Namespace"], metric["Name"], frozenset((d, record[d]) for d in dimensions))
        for record in records
        for directive in record["_aws"]["CloudWatchMetrics"]
        for dimensions in directive["Dimensions"]
        for metric in directive["Metrics"]
    }


def alarm_series(alarm: dict[str, Any]) -> set[Series]:
    properties = alarm["Properties"]
    watched = (
        [properties]
        if "MetricName" in properties
        else [m["MetricStat"]["Metric"] for m in properties["Metrics"] if "MetricStat" in m]
    )
    return {
        (
            metric["Namespace"],
            metric["MetricName"],
            frozenset((d["Name"], json.dumps(d["Value"])) if isinstance(d["Value"], dict)
                      else (d["Name"], d["Value"]) for d in metric.get("Dimensions", [])),
        )
        for metric in watched
    }  # fmt: skip


def dashboard_widgets(package: Package) -> list[dict[str, Any]]:
    body = sub_text(package.resources["OperationsDashboard"]["Properties"]["DashboardBody"])
    return json.loads(body)["widgets"]


def dashboard_series(package: Package) -> set[Series]:
    """Each series a metric widget draws: [namespace, name, dimension, value, ..., options]."""
    rows = [m for w in dashboard_widgets(package) for m in w["properties"].get("metrics", [])]
    return {
        (row[0], row[1], frozenset(zip(names[::2], names[1::2], strict=True)))
        for row in rows
        for names in [[x for x in row[2:] if isinstance(x, str)]]
    }


def test_the_alarms_on_our_own_metrics_read_series_the_reaper_publishes(package):
    alarms = {
        name: alarm_series(r)
        for name, r in package.resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    own = {s for watched in alarms.values() for s in watched if s[0] == metrics.NAMESPACE}
    stage = frozenset({("Stage", STAGE)})

    assert own and own <= published_series()
    assert (metrics.NAMESPACE, metrics.STUCK_INSTANCES, stage) in alarms["StuckInstancesAlarm"]
    assert (metrics.NAMESPACE, metrics.ORPHANS_TERMINATED, stage) in alarms[
        "OrphansTerminatedAlarm"
    ]
    assert (metrics.NAMESPACE, metrics.BURN_RATE, stage) in alarms["BurnRateAlarm"]
    assert (metrics.NAMESPACE, metrics.REAPER_FAILURES, stage) in alarms["ReaperErrorsAlarm"]
    assert {s[1] for s in alarms["WorkflowFailuresAlarm"]} == {
        "ExecutionsFailed", "ExecutionsTimedOut"
    }
    lambda_errors = {
        dict(s[2])["FunctionName"] for s in alarms["StepFunctionErrorsAlarm"] if s[1] == "Errors"
    }
    assert lambda_errors == {json.dumps({"Ref": function_resource(n)}) for n in STEP_FUNCTIONS}
    burn = package.resources["BurnRateAlarm"]["Properties"]
    assert burn["Threshold"] == {"Ref": "BurnRateAlarmUsdPerHour"}


@pytest.mark.parametrize("alarm", ["StuckInstancesAlarm", "OrphansTerminatedAlarm"])
def test_a_single_stuck_instance_or_orphan_in_five_minutes_raises_its_alarm(package, alarm):
    properties = package.resources[alarm]["Properties"]

    assert properties["Statistic"] == "Sum"
    assert properties["Period"] == 300
    assert properties["EvaluationPeriods"] == 1
    assert properties["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert properties["Threshold"] == 1
    assert properties["TreatMissingData"] == "notBreaching"  # a tick publishes 0 when all is well
    assert properties["AlarmActions"] == properties["OKActions"] == {
        "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
    }


def test_the_dashboard_shows_live_instances_provisioning_time_burn_rate_errors_and_orphans(
    package,
):
    widgets = dashboard_widgets(package)
    shown = dashboard_series(package)
    names = {(s[0], s[1]) for s in shown}

    assert {
        (metrics.NAMESPACE, metrics.LIVE_INSTANCES),
        (metrics.NAMESPACE, metrics.BURN_RATE),
        (metrics.NAMESPACE, metrics.ORPHANS_TERMINATED),
        (metrics.NAMESPACE, metrics.TERMINATED_OUTSIDE_SERVICE),
        ("AWS/States", "ExecutionTime"),
        ("AWS/Lambda", "Errors"),
    } <= names
    assert {s for s in shown if s[0] == metrics.NAMESPACE} <= published_series()
    statuses = {dict(s[2])["Status"] for s in shown if s[1] == metrics.LIVE_INSTANCES}
    assert statuses == {"PROVISIONING", "CONFIGURING", "READY", "RUNNING", "STOPPING"}
    errors_of = {dict(s[2])["FunctionName"] for s in shown if s[:2] == ("AWS/Lambda", "Errors")}
    assert errors_of == {f"${{{function_resource(n)}}}" for n in CONFIG["lambda_functions"]}
    executions_of = {
        dict(s[2])["StateMachineArn"] for s in shown if s[1] == "ExecutionsStarted"
    }
    assert executions_of == {f"${{{state_machine_resource(w)}}}" for w in WORKFLOWS}
    [alarm_widget] = [w for w in widgets if w["type"] == "alarm"]
    alarms = [n for n, r in package.resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(f"${{{a}.Arn}}" for a in alarms)


# -- rendering, without packaging -------------------------------------------------------


def test_dev_and_prod_policy_files_differ_only_by_the_stage_name():
    for path in sorted((CHALICE_DIR / "policies" / "prod").glob("*.json")):
        dev = (CHALICE_DIR / "policies" / "dev" / path.name).read_text()
        assert dev == path.read_text().replace("-prod", "-dev"), path.name


def test_each_stage_renders_its_own_names():
    dev = render("dev")["Resources"]

    assert dev["InstancesTable"]["Properties"]["TableName"] == "instance-provisioner-dev-instances"
    assert dev["ControlTable"]["Properties"]["TableName"] == "instance-provisioner-dev-control"
    assert dev["ReleaseStateMachine"]["Properties"]["StateMachineName"] == (
        "instance-provisioner-dev-release"
    )
    assert dev["ReleaseStateMachineLogs"]["Properties"]["RetentionInDays"] == 14
    assert dev["LaunchInstance"]["Properties"]["FunctionName"] == (
        "instance-provisioner-dev-launch_instance"
    )
    assert dev["APIHandler"]["Properties"]["FunctionName"] == "instance-provisioner-dev"
    assert "prod" not in json.dumps(dev)


def test_a_workflow_without_its_state_machine_in_the_merge_template_is_not_rendered(
    tmp_path, monkeypatch
):
    template = json.loads((CHALICE_DIR / "merge-template.json").read_text())
    del template["Resources"]["ReleaseStateMachine"]
    broken = tmp_path / "merge-template.json"
    broken.write_text(json.dumps(template))
    monkeypatch.setattr(render_merge_template, "MERGE_TEMPLATE", broken)

    with pytest.raises(RenderError, match="ReleaseStateMachine"):
        render("prod")


def test_wildcard_regions_and_accounts_of_policy_arns_are_bound_to_the_stack():
    assert bound_to_stack("arn:aws:ec2:*::image/*") == {
        "Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}::image/*"
    }
    assert bound_to_stack(["*", "arn:aws:events:*:*:event-bus/b"]) == [
        "*",
        {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/b"},
    ]


def test_the_machines_agents_call_the_deployed_apis_own_url(package):
    variables = package.function("launch_instance")["Properties"]["Environment"]["Variables"]
    stage = CONFIG["stages"][STAGE]["api_gateway_stage"]

    assert variables["AGENT_CALLBACK_URL"] == {
        "Fn::Sub": f"https://${{RestAPI}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{stage}"
    }
