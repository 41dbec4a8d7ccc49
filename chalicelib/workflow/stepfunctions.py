"""Starts the lifecycle workflow (a Step Functions Standard state machine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFINITION_FILE = Path(__file__).with_name("lifecycle.asl.json")

# The Task states of the ASL document and the Lambda function (in app.py) behind each.
TASK_FUNCTIONS: dict[str, str] = {
    "LaunchInstanceFunctionArn": "launch_instance",
    "CheckInstanceRunningFunctionArn": "check_instance_running",
    "MarkInstanceConfiguringFunctionArn": "mark_instance_configuring",
    "CheckInstanceStatusFunctionArn": "check_instance_status",
    "MarkInstanceReadyFunctionArn": "mark_instance_ready",
    "RecordInstanceErrorFunctionArn": "record_instance_error",
}


def render_definition(function_arns: dict[str, str]) -> str:
    """The ASL document with each ${...FunctionArn} placeholder replaced by an ARN,
    as CloudFormation's DefinitionSubstitutions does in a deployment."""
    definition = DEFINITION_FILE.read_text()
    for placeholder, arn in function_arns.items():
        definition = definition.replace("${" + placeholder + "}", arn)
    json.loads(definition)  # fail here, not in the state machine, if a substitution broke it
    return definition


class StepFunctionsWorkflowStarter:
    def __init__(self, client: Any, state_machine_arn: str) -> None:
        self._client = client
        self._state_machine_arn = state_machine_arn

    def execution_id(self, execution_name: str) -> str:
        """The ARN an execution of this name gets: known before it starts, so the record
        can carry it from its first write."""
        prefix, _, machine = self._state_machine_arn.rpartition(":stateMachine:")
        return f"{prefix}:execution:{machine}:{execution_name}"

    def start(self, execution_name: str, execution_input: dict[str, Any]) -> str:
        response = self._client.start_execution(
            stateMachineArn=self._state_machine_arn,
            name=execution_name,
            input=json.dumps(execution_input),
        )
        return str(response["executionArn"])
