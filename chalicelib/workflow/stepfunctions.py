"""The service's Step Functions workflows (their ASL documents and the Lambda function behind
each Task) and the starter that begins an execution of one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str  # the state machine is <app>-<stage>-<name>
    definition_file: Path
    # Each ${...FunctionArn} placeholder of the ASL document and the function (in app.py)
    # bound to it.
    task_functions: dict[str, str]

    def render(self, function_arns: dict[str, str]) -> str:
        """The ASL document with each placeholder replaced by an ARN, as CloudFormation's
        DefinitionSubstitutions does in a deployment."""
        definition = self.definition_file.read_text()
        for placeholder, arn in function_arns.items():
            definition = definition.replace("${" + placeholder + "}", arn)
        json.loads(definition)  # fail here, not in the state machine, if a substitution broke
        return definition


LIFECYCLE = WorkflowDefinition(
    name="lifecycle",
    definition_file=_HERE / "lifecycle.asl.json",
    task_functions={
        "LaunchInstanceFunctionArn": "launch_instance",
        "CheckInstanceRunningFunctionArn": "check_instance_running",
        "MarkInstanceConfiguringFunctionArn": "mark_instance_configuring",
        "CheckInstanceStatusFunctionArn": "check_instance_status",
        "CheckInstanceAgentFunctionArn": "check_instance_agent",
        "MarkInstanceReadyFunctionArn": "mark_instance_ready",
        "RecordInstanceErrorFunctionArn": "record_instance_error",
    },
)
RELEASE = WorkflowDefinition(
    name="release",
    definition_file=_HERE / "release.asl.json",
    task_functions={"ReleaseInstanceFunctionArn": "release_instance"},
)
WORKFLOWS = (LIFECYCLE, RELEASE)


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
