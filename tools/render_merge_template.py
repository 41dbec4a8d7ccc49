"""Renders .chalice/merge-template.json for one stage into the template `chalice package` merges.

The merge template cannot read files, so this fills in what must come from elsewhere:
each workflow's ASL document itself (the same file the local run executes), each Task's
function ARN, the dashboard, the stage's names, each function's name, and each function
role's policy file with its wildcard region and account bound to the stack's own
(`chalice deploy` uses the files as they are).

    python -m tools.render_merge_template --stage prod --output dist/merge-template.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from chalice.utils import to_cfn_resource_name

from chalicelib.workflow.stepfunctions import WORKFLOWS, WorkflowDefinition

PROJECT_DIR = Path(__file__).resolve().parent.parent
CHALICE_DIR = PROJECT_DIR / ".chalice"
MERGE_TEMPLATE = CHALICE_DIR / "merge-template.json"
DASHBOARD = CHALICE_DIR / "dashboard.json"
CONFIG = CHALICE_DIR / "config.json"
STAGE_TOKEN = "__STAGE__"
_ARN = re.compile(r"^arn:aws:(?P<service>[^:]+):(?P<region>[^:]*):(?P<account>[^:]*):(?P<rest>.+)$")


class RenderError(Exception):
    """The merge template, the config or a policy file is not what rendering expects."""


def function_resource(function_name: str) -> str:
    """The logical id `chalice package` gives the Lambda function of this name."""
    return "APIHandler" if function_name == "api_handler" else to_cfn_resource_name(function_name)


def state_machine_resource(workflow: WorkflowDefinition, part: str = "") -> str:
    """The logical id of a workflow's state machine, or of its `Role` or `Logs` (the log
    group), in the merge template: LifecycleStateMachine, LifecycleStateMachineRole..."""
    return f"{to_cfn_resource_name(workflow.name)}StateMachine{part}"


def role_resource(function_name: str) -> str:
    """The logical id of the role Chalice generates for a function when autogen_policy is off."""
    return to_cfn_resource_name(f"{function_name}_role")


def bound_to_stack(resource: Any) -> Any:
    """A policy Resource with each `*` region or account of an ARN bound to the stack's own."""
    if isinstance(resource, list):
        return [bound_to_stack(r) for r in resource]
    match = _ARN.match(resource) if isinstance(resource, str) else None
    if match is None:
        return resource
    region = "${AWS::Region}" if match["region"] == "*" else match["region"]
    account = "${AWS::AccountId}" if match["account"] == "*" else match["account"]
    return {
        "Fn::Sub": f"arn:${{AWS::Partition}}:{match['service']}:{region}:{account}:{match['rest']}"
    }


def policy_for_stack(document: dict[str, Any]) -> dict[str, Any]:
    statements = [
        {**statement, "Resource": bound_to_stack(statement["Resource"])}
        for statement in document["Statement"]
    ]
    return {**document, "Statement": statements}


def lambda_name(app_name: str, stage: str, function_name: str) -> str:
    """The name `chalice deploy` gives the function; the package uses the same one."""
    if function_name == "api_handler":
        return f"{app_name}-{stage}"
    return f"{app_name}-{stage}-{function_name}"


def load_config(stage: str) -> tuple[str, dict[str, Any]]:
    """The app name and the stage's section of .chalice/config.json."""
    config = json.loads(CONFIG.read_text())
    if stage not in config.get("stages", {}):
        raise RenderError(f"Stage {stage!r} is not in {CONFIG}.")
    return config["app_name"], config["stages"][stage]


def function_overrides(stage: str) -> dict[str, Any]:
    """Per Chalice function: its name, its log group's name, and its role's policy.

    Named functions keep the policy files' ARNs exact (a CloudFormation-generated name is
    unknown until deployment) and give the alarms and logs readable names. The log group
    is named literally because Chalice 1.34 names the API handler's log group after a
    resource that does not exist (`${ApiHandler}`; aws/chalice#2079)."""
    app_name, settings = load_config(stage)
    overrides: dict[str, Any] = {}
    for function_name, function in settings.get("lambda_functions", {}).items():
        name = lambda_name(app_name, stage, function_name)
        overrides[function_resource(function_name)] = {"Properties": {"FunctionName": name}}
        if settings.get("log_retention_in_days") is not None:
            log_group = to_cfn_resource_name(f"{function_name}-log-group")
            overrides[log_group] = {
                # Logs go with the stack; only the table outlives it.
                "DeletionPolicy": "Delete",
                "UpdateReplacePolicy": "Delete",
                "Properties": {"LogGroupName": f"/aws/lambda/{name}"},
            }
        if "iam_policy_file" not in function:
            raise RenderError(
                f"{function_name} has no iam_policy_file in stage {stage!r} of {CONFIG}."
            )
        document = json.loads((CHALICE_DIR / function["iam_policy_file"]).read_text())
        role = role_resource(function_name)
        overrides[role] = {
            "Properties": {
                "Policies": [
                    {"PolicyName": f"{role}Policy", "PolicyDocument": policy_for_stack(document)}
                ]
            }
        }
    return overrides


def render(stage: str) -> dict[str, Any]:
    """The merge template of `stage`, ready for `chalice package --merge-template`."""
    app_name, settings = load_config(stage)
    template = json.loads(MERGE_TEMPLATE.read_text().replace(STAGE_TOKEN, stage))
    resources = template["Resources"]
    declared = {
        name for name, resource in resources.items()
        if resource.get("Type") == "AWS::StepFunctions::StateMachine"
    }  # fmt: skip
    expected = {state_machine_resource(workflow) for workflow in WORKFLOWS}
    if declared != expected:
        raise RenderError(
            f"{MERGE_TEMPLATE} declares the state machines {sorted(declared)}; the workflows "
            f"of chalicelib/workflow/stepfunctions.py need {sorted(expected)}."
        )
    retention = int(settings.get("log_retention_in_days", 30))
    for workflow in WORKFLOWS:
        _render_workflow(resources, workflow, f"{app_name}-{stage}-{workflow.name}", retention)
    dashboard = json.loads(DASHBOARD.read_text().replace(STAGE_TOKEN, stage))
    _fill(
        resources["OperationsDashboard"]["Properties"],
        "DashboardBody",
        {"Fn::Sub": json.dumps(dashboard, separators=(",", ":"))},
    )
    _merge_into(resources, function_overrides(stage))

    leftovers = re.findall(r'"(<<[^"]*>>)"', json.dumps(template))
    if leftovers:
        raise RenderError(f"Unfilled values in {MERGE_TEMPLATE}: {leftovers}")
    return template


def _render_workflow(
    resources: dict[str, Any], workflow: WorkflowDefinition, machine_name: str, retention: int
) -> None:
    """Fill one workflow's state machine (its ASL document, each Task's function), its role
    (may invoke those functions only) and its log group."""
    task_arns = {
        placeholder: {"Fn::GetAtt": [function_resource(name), "Arn"]}
        for placeholder, name in workflow.task_functions.items()
    }
    definition_text = workflow.definition_file.read_text()
    missing = set(re.findall(r"\$\{(\w+)\}", definition_text)) - set(task_arns)
    if missing:
        raise RenderError(
            f"No function is bound to {sorted(missing)} in the task_functions of the "
            f"{workflow.name} workflow."
        )
    machine_id, role_id, logs_id = (
        state_machine_resource(workflow, part) for part in ("", "Role", "Logs")
    )
    absent = [name for name in (machine_id, role_id, logs_id) if name not in resources]
    if absent:
        raise RenderError(f"{MERGE_TEMPLATE} has no {absent} for the {workflow.name} workflow.")

    machine = resources[machine_id]["Properties"]
    if machine.get("StateMachineName") != machine_name:
        # The functions find the machine by this name (its ARN is built in the environment).
        raise RenderError(f"{machine_id} must be named {machine_name!r} in {MERGE_TEMPLATE}.")
    _fill(machine, "Definition", json.loads(definition_text))
    _fill(machine, "DefinitionSubstitutions", task_arns)
    [policy] = resources[role_id]["Properties"]["Policies"]
    [invoke] = [
        s for s in policy["PolicyDocument"]["Statement"] if s["Action"] == "lambda:InvokeFunction"
    ]
    _fill(invoke, "Resource", list(task_arns.values()))
    _fill(resources[logs_id]["Properties"], "RetentionInDays", retention)


def _merge_into(target: dict[str, Any], additions: dict[str, Any]) -> None:
    for key, value in additions.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = value


def _fill(properties: dict[str, Any], key: str, value: Any) -> None:
    current = properties.get(key)
    if not (isinstance(current, str) and current.startswith("<<")):
        raise RenderError(f"{MERGE_TEMPLATE} has no <<...>> value to fill at {key!r}.")
    properties[key] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        template = render(args.stage)
    except RenderError as error:
        print(f"render_merge_template: {error}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(template, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
