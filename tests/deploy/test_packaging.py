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
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from chalicelib import metrics
from chalicelib.persistence.dynamodb import InstanceModel
from chalicelib.workflow.stepfunctions import LIFECYCLE
from tools.lint_template import sam_transform
from tools.render_merge_template import (
    CHALICE_DIR,
    PROJECT_DIR,
    bound_to_stack,
    function_resource,
    render,
    role_resource,
)

DEFINITION_FILE = LIFECYCLE.definition_file
TASK_FUNCTIONS = LIFECYCLE.task_functions
STAGE = "prod"
CONFIG = json.loads((CHALICE_DIR / "config.json").read_text())
STEP_FUNCTIONS = set(TASK_FUNCTIONS.values())
CLOUD_CALLERS = (STEP_FUNCTIONS - {"mark_instance_configuring", "mark_instance_ready"}) | {
    "reaper", "release_instance",
}
PUBLIC_PATHS = {"/api/openapi.json"}


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
    assert not [n for n in names if n.split("/")[0] in {"tests", "tools", "local", "bench"}]


def test_the_template_holds_the_service_resources(package):
    types = {name: r["Type"] for name, r in package.resources.items()}

    assert types["InstancesTable"] == "AWS::DynamoDB::Table"
    assert types["LifecycleEventBus"] == "AWS::Events::EventBus"
    assert types["LifecycleStateMachine"] == "AWS::StepFunctions::StateMachine"
    assert types["OperationsDashboard"] == "AWS::CloudWatch::Dashboard"
    assert sum(t == "AWS::CloudWatch::Alarm" for t in types.values()) >= 5
    functions = {n for n, t in types.items() if t == "AWS::Serverless::Function"}
    assert functions == {function_resource(n) for n in CONFIG["lambda_functions"]}


# -- the workflow -----------------------------------------------------------------------


def test_the_state_machine_runs_the_local_asl_document_with_each_task_bound_to_its_function(
    package,
):
    machine = package.resources["LifecycleStateMachine"]["Properties"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", DEFINITION_FILE.read_text()))

    assert machine["Definition"] == json.loads(DEFINITION_FILE.read_text())
    assert machine["StateMachineType"] == "STANDARD"
    assert set(machine["DefinitionSubstitutions"]) == placeholders == set(TASK_FUNCTIONS)
    for placeholder, function_name in TASK_FUNCTIONS.items():
        logical_id, attribute = machine["DefinitionSubstitutions"][placeholder]["Fn::GetAtt"]
        assert attribute == "Arn"
        function = package.resources[logical_id]
        assert function["Type"] == "AWS::Serverless::Function"
        assert function["Properties"]["Handler"] == f"app.{function_name}"


def test_the_state_machine_logs_and_traces_and_may_invoke_only_the_step_functions(package):
    machine = package.resources["LifecycleStateMachine"]["Properties"]
    role = package.resources["LifecycleStateMachineRole"]["Properties"]
    [policy] = role["Policies"]
    invoke = [s for s in policy["PolicyDocument"]["Statement"] if "lambda" in str(s["Action"])]

    assert machine["TracingConfiguration"] == {"Enabled": True}
    assert machine["LoggingConfiguration"]["Level"] == "ALL"
    [destination] = machine["LoggingConfiguration"]["Destinations"]
    assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == {
        "Fn::GetAtt": ["LifecycleStateMachineLogs", "Arn"]
    }
    assert machine["RoleArn"] == {"Fn::GetAtt": ["LifecycleStateMachineRole", "Arn"]}
    assert [s["Action"] for s in invoke] == ["lambda:InvokeFunction"]
    assert sorted(r["Fn::GetAtt"][0] for r in invoke[0]["Resource"]) == sorted(
        function_resource(n) for n in STEP_FUNCTIONS
    )


def test_each_step_function_times_out_before_its_task_state_does(package):
    states = json.loads(DEFINITION_FILE.read_text())["States"]
    for state in states.values():
        if state["Type"] != "Task":
            continue
        placeholder = state["Resource"].strip("${}")
        function = package.function(TASK_FUNCTIONS[placeholder])["Properties"]
        assert function["Timeout"] < state["TimeoutSeconds"], placeholder


def test_the_functions_know_the_state_machine_the_table_and_the_bus_of_their_stage(package):
    machine = package.resources["LifecycleStateMachine"]["Properties"]
    table = package.resources["InstancesTable"]["Properties"]
    bus = package.resources["LifecycleEventBus"]["Properties"]
    shared = package.template["Globals"]["Function"]["Environment"]["Variables"]

    assert sub_text(shared["LIFECYCLE_STATE_MACHINE_ARN"]).endswith(
        f":stateMachine:{machine['StateMachineName']}"
    )
    assert shared["EC2_AMI_ID"] == {"Ref": "Ec2AmiId"}
    for name in CONFIG["lambda_functions"]:
        variables = package.function(name)["Properties"]["Environment"]["Variables"]
        assert variables["STAGE"] == STAGE
        assert variables["INSTANCES_TABLE_NAME"] == table["TableName"]
        assert variables["EVENT_BUS_NAME"] == bus["Name"]
        assert ("AZURE_CLIENT_SECRET" in variables) == (name in CLOUD_CALLERS), name


# -- the schedule -----------------------------------------------------------------------


def test_the_schedule_runs_the_reaper_every_minute(package):
    resources = package.transformed["Resources"].values()

    [rule] = [r for r in resources if r["Type"] == "AWS::Events::Rule"]
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function_resource("reaper"), "Arn"]}
    assert package.function("reaper")["Properties"]["Handler"] == "app.reaper"


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
    assert keys(properties["KeySchema"]) == keys(schema["key_schema"])
    def attributes(definitions: list[dict[str, str]]) -> set[tuple[str, str]]:
        return {(a["AttributeName"], a["AttributeType"]) for a in definitions}

    assert attributes(properties["AttributeDefinitions"]) == attributes(
        schema["attribute_definitions"]
    )
    indexes = {i["IndexName"]: i for i in properties["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"by-user", "by-task", "live-by-status"}
    for index in schema["global_secondary_indexes"]:
        deployed = indexes[index["index_name"]]
        assert keys(deployed["KeySchema"]) == keys(index["key_schema"])
        assert deployed["Projection"] == index["projection"] == {"ProjectionType": "ALL"}
    assert "TimeToLiveSpecification" not in properties  # records do not expire


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


def test_only_the_step_and_reaper_functions_call_ec2(package):
    for name in CONFIG["lambda_functions"]:
        ec2 = {a for a in actions(package.statements(name)) if a.startswith("ec2:")}
        if name in CLOUD_CALLERS:
            assert "ec2:DescribeInstances" in ec2, name
        else:
            assert not ec2, name
    assert "ec2:RunInstances" in actions(package.statements("launch_instance"))
    assert "ec2:RunInstances" not in actions(package.statements("reaper"))
    assert "ec2:RunInstances" not in actions(package.statements("api_handler"))


def test_ec2_launches_and_tags_need_the_deployments_tags_and_so_do_terminations_on_the_target(
    package,
):
    deployment = {
        "provisioner:managed": "true", "provisioner:deployment": f"instance-provisioner-{STAGE}"
    }
    for name in CONFIG["lambda_functions"]:
        for statement in package.statements(name):
            granted = set(as_list(statement["Action"]))
            condition = statement.get("Condition", {}).get("StringEquals", {})
            targets = [sub_text(r) for r in as_list(statement["Resource"])]
            if "ec2:TerminateInstances" in granted:
                assert condition == {f"ec2:ResourceTag/{k}": v for k, v in deployment.items()}
                assert all(t.endswith(":instance/*") for t in targets)
            if "ec2:CreateTags" in granted:
                assert condition == {
                    "ec2:CreateAction": "RunInstances",
                    **{f"aws:RequestTag/{k}": v for k, v in deployment.items()},
                }
            if "ec2:RunInstances" in granted and any(
                t.endswith((":instance/*", ":volume/*")) for t in targets
            ):
                assert condition == {f"aws:RequestTag/{k}": v for k, v in deployment.items()}
            if targets == ["*"]:
                assert all(a.startswith(("ec2:Describe", "xray:")) for a in granted), statement


def test_only_the_api_starts_workflows_and_events_go_only_to_the_bus(package):
    bus = package.resources["LifecycleEventBus"]["Properties"]["Name"]
    machine = package.resources["LifecycleStateMachine"]["Properties"]["StateMachineName"]
    for name in CONFIG["lambda_functions"]:
        for statement in package.statements(name):
            granted = set(as_list(statement["Action"]))
            targets = [sub_text(r) for r in as_list(statement["Resource"])]
            if "events:PutEvents" in granted:
                assert granted == {"events:PutEvents"}
                assert targets == [
                    f"arn:${{AWS::Partition}}:events:${{AWS::Region}}:${{AWS::AccountId}}"
                    f":event-bus/{bus}"
                ]
            if "states:StartExecution" in granted:
                assert name == "api_handler"
                assert [t.rsplit(":", 1)[-1] for t in targets] == [machine]


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


def test_the_alarms_watch_the_metrics_the_reaper_publishes(package):
    def watched(alarm: dict[str, Any]) -> set[tuple[str, str]]:
        properties = alarm["Properties"]
        if "MetricName" in properties:
            return {(properties["Namespace"], properties["MetricName"])}
        return {
            (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"])
            for m in properties["Metrics"]
            if "MetricStat" in m
        }

    alarms = {
        name: watched(r)
        for name, r in package.resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    own = metrics.NAMESPACE
    assert (own, metrics.STUCK_INSTANCES) in alarms["StuckInstancesAlarm"]
    assert (own, metrics.BURN_RATE) in alarms["BurnRateAlarm"]
    assert (own, metrics.REAPER_FAILURES) in alarms["ReaperErrorsAlarm"]
    assert ("AWS/States", "ExecutionsFailed") in alarms["WorkflowFailuresAlarm"]
    assert ("AWS/Lambda", "Errors") in alarms["StepFunctionErrorsAlarm"]
    burn = package.resources["BurnRateAlarm"]["Properties"]
    assert burn["Threshold"] == {"Ref": "BurnRateAlarmUsdPerHour"}
    assert burn["Dimensions"] == [{"Name": "Stage", "Value": STAGE}]


def test_the_dashboard_shows_live_instances_provisioning_time_burn_rate_and_errors(package):
    body = sub_text(package.resources["OperationsDashboard"]["Properties"]["DashboardBody"])
    widgets = json.loads(body)["widgets"]
    shown = {tuple(m[:2]) for w in widgets for m in w["properties"].get("metrics", [])}

    assert {
        (metrics.NAMESPACE, metrics.LIVE_INSTANCES),
        (metrics.NAMESPACE, metrics.BURN_RATE),
        ("AWS/States", "ExecutionTime"),
        ("AWS/Lambda", "Errors"),
    } <= shown
    statuses = {m[5] for w in widgets for m in w["properties"].get("metrics", [])
                if m[1] == metrics.LIVE_INSTANCES}  # fmt: skip
    assert statuses == {"PROVISIONING", "CONFIGURING", "READY", "RUNNING", "STOPPING"}


# -- rendering, without packaging -------------------------------------------------------


def test_dev_and_prod_policy_files_differ_only_by_the_stage_name():
    for path in sorted((CHALICE_DIR / "policies" / "prod").glob("*.json")):
        dev = (CHALICE_DIR / "policies" / "dev" / path.name).read_text()
        assert dev == path.read_text().replace("-prod", "-dev"), path.name


def test_each_stage_renders_its_own_names():
    dev = render("dev")["Resources"]

    assert dev["InstancesTable"]["Properties"]["TableName"] == "instance-provisioner-dev-instances"
    assert dev["LaunchInstance"]["Properties"]["FunctionName"] == (
        "instance-provisioner-dev-launch_instance"
    )
    assert dev["APIHandler"]["Properties"]["FunctionName"] == "instance-provisioner-dev"
    assert "prod" not in json.dumps(dev)


def test_wildcard_regions_and_accounts_of_policy_arns_are_bound_to_the_stack():
    assert bound_to_stack("arn:aws:ec2:*::image/*") == {
        "Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}::image/*"
    }
    assert bound_to_stack(["*", "arn:aws:events:*:*:event-bus/b"]) == [
        "*",
        {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/b"},
    ]
