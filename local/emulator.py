"""In-process clouds for the local run and the tests: moto with its Step Functions interpreter
executing the very ASL document the deployment uses, its Lambda invocations routed to the
step handlers of app.py, and the table, bus and state machine created from our definitions;
and a local Azure Resource Manager (local/arm_fake.py) that the real Azure SDK talks to."""

from __future__ import annotations

import copy
import functools
import json
import os
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import boto3
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.dynamodb.models import DynamoDBBackend
from moto.ec2.models import EC2Backend
from moto.ec2.models import instances as moto_instances
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.models import stepfunctions_parser_backends
from moto.stepfunctions.parser.utils import TMP_THREADS

from chalicelib.persistence.control import configure_control_model, create_control_table
from chalicelib.persistence.dynamodb import configure_instance_model, create_instance_table
from chalicelib.providers.azure_compute import AzureConnection
from chalicelib.settings import AzureSettings, Ec2Settings, Settings
from chalicelib.workflow.stepfunctions import WORKFLOWS, WorkflowDefinition
from local.arm_fake import ArmFake, ServedArm, served
from local.moto_baseline import MotoBaseline

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
APP_NAME = "instance-provisioner"
STAGE = "local"
# The name every machine launched by the local run is tagged with (provisioner:deployment).
DEPLOYMENT_NAME = "local"
MOTO_CONFIG = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
}
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
AZURE_IMAGE = "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest"
AZURE_ADMIN = "provisioner"
# A public key only (the fake never logs in); no password is ever set on an Azure VM.
AZURE_SSH_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHd4dGVzdGtleWZvcnRoZWxvY2FsYXJtZmFrZTAwMDAw "
    "provisioner@local"
)


def function_name(handler_name: str) -> str:
    """Chalice names a deployed function <app>-<stage>-<name>; the emulation does the same."""
    return f"{APP_NAME}-{STAGE}-{handler_name}"


def function_arn(handler_name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name(handler_name)}"


@dataclass
class LambdaRouter:
    """Answers moto's Lambda Invoke with the in-process handler of the same name, the way
    the Lambda runtime would: a JSON result, or FunctionError with errorType/errorMessage."""

    handlers: dict[str, Callable[[dict, Any], Any]]
    invocations: list[tuple[str, dict]] = field(default_factory=list)
    # Called before each step with its name and event: what goes on meanwhile outside the
    # workflow (the tests' simulated agents report when the workflow first asks).
    before_step: Callable[[str, dict], None] | None = None
    # The function each thread is running, while it runs (the tests attribute cloud calls).
    _running: threading.local = field(default_factory=threading.local)

    def running(self) -> str | None:
        """The name of the function this thread is running, or None."""
        return getattr(self._running, "name", None)

    def invoke(
        self, backend: Any, function_name: str, qualifier: Any, body: Any, headers: Any,
        response_headers: dict[str, str],
    ) -> bytes:
        name = function_name.rsplit(":", 1)[-1].removeprefix(f"{APP_NAME}-{STAGE}-")
        handler = self.handlers.get(name)
        event = json.loads(body or "{}")
        self.invocations.append((name, event))
        if self.before_step is not None:
            self.before_step(name, event)
        if handler is None:
            response_headers["x-amz-function-error"] = "Unhandled"
            return _error_payload("ResourceNotFoundException", f"no handler {function_name}")
        self._running.name = name
        try:
            result = handler(event, None)
        except Exception as error:  # the Lambda runtime reports any exception this way
            response_headers["x-amz-function-error"] = "Unhandled"
            return _error_payload(type(error).__name__, str(error))
        finally:
            self._running.name = None
        return json.dumps(result, default=str).encode()


SERIALISED_WRITES: tuple[tuple[type, str], ...] = (
    (DynamoDBBackend, "put_item"),
    (DynamoDBBackend, "update_item"),
    (DynamoDBBackend, "delete_item"),
    (DynamoDBBackend, "transact_write_items"),
    (EC2Backend, "run_instances"),
    (EC2Backend, "terminate_instances"),
)
_WRITES = threading.RLock()


def _serialised(write: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(write)
    def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with _WRITES:
            return write(*args, **kwargs)

    return one_at_a_time


_parse = AmazonStateLanguageParser.parse


@functools.lru_cache(maxsize=16)
def _parse_once(definition: str) -> tuple[Any, Any]:
    """The parsed program of an ASL document: its components hold no state of an execution
    (that lives in each execution's environment), so executions can share it."""
    return _parse(definition)


def _error_payload(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


def step_handlers() -> dict[str, Callable[[dict, Any], Any]]:
    """The workflow's Task handlers, taken from app.py by the names the ASL binds."""
    import app

    return {
        name: getattr(app, name)
        for workflow in WORKFLOWS
        for name in workflow.task_functions.values()
    }


@dataclass
class EmulatedAws:
    settings: Settings
    router: LambdaRouter
    retry_waits: list[float]
    arm: ServedArm
    azure: AzureConnection
    # Waits the Azure SDK asked for (retry backoff, Retry-After), recorded instead of spent.
    azure_waits: list[float] = field(default_factory=list)
    # moto's state right after start-up, which `reset` goes back to.
    baseline: MotoBaseline | None = None

    @property
    def arm_fake(self) -> ArmFake:
        return self.arm.fake

    def wait_for_workflows(self, timeout: float = 60.0) -> None:
        """Block until every workflow execution started so far has finished (a join, not
        a sleep: the executions run in moto's worker threads)."""
        for thread in list(TMP_THREADS):
            if thread is not threading.current_thread():
                thread.join(timeout)
                if thread.is_alive():
                    raise TimeoutError("a workflow execution did not finish in time")

    def stop_workflows(self, timeout: float = 10.0) -> None:
        """Stop every execution still running, as StopExecution would, and join its thread:
        nothing of one test goes on running into the next."""
        backend = stepfunctions_parser_backends[ACCOUNT_ID][REGION]
        deadline = time.monotonic() + timeout
        while True:  # a stopping execution may still start the thread of a Task's retry
            starting = False
            for machine in backend.state_machines:
                for execution in machine.executions:
                    if getattr(execution, "exec_status", None) != "RUNNING":
                        continue
                    worker = execution.exec_worker
                    if worker is None or worker.env is None:
                        # Its thread has not made its environment yet: there is nothing to
                        # stop until it has (moto's stop would fail on the missing one).
                        starting = True
                        continue
                    execution.stop(stop_date=datetime.now(UTC), error="", cause="")
            alive = [
                thread for thread in TMP_THREADS
                if thread.is_alive() and thread is not threading.current_thread()
            ]
            if not alive and not starting:
                break
            if starting:
                time.sleep(0.001)  # look again soon rather than wait for a whole workflow
            else:
                for thread in alive:
                    thread.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError("a workflow execution did not stop in time")
        TMP_THREADS.clear()

    def reset(self) -> None:
        """Back to the state right after start-up (one emulation serves a test session):
        every execution stopped, and every record, machine, execution, queue, rule and Azure
        resource made since gone; the state machines, tables and bus stay."""
        try:
            self.stop_workflows()
        finally:  # even then: one test's failure is not passed on to the next as its state
            if self.baseline is not None:
                self.baseline.restore()
            self.arm_fake.reset()
            # A new credential too: the old one holds a token the fake no longer knows.
            self.azure = azure_connection(self.arm, self.azure.sleep)
            self.router.invocations.clear()
            self.router.before_step = None
            self.retry_waits.clear()
            self.azure_waits.clear()

    def execution_status(self, execution_arn: str) -> str:
        client = boto3.client("stepfunctions", region_name=REGION)
        return client.describe_execution(executionArn=execution_arn)["status"]


@contextmanager
def emulated_aws(
    poll_seconds: int = 0,
    max_checks: int = 5,
    instant_retries: bool = True,
    extra_env: dict[str, str] | None = None,
    arm_port: int = 0,
    clock: Callable[[], datetime] | None = None,
    arm_fd: int | None = None,
    finish_workflows: bool = True,
) -> Iterator[EmulatedAws]:
    """Start moto and the local Azure Resource Manager, create the service's AWS resources,
    and yield the matching settings.

    instant_retries: moto's interpreter and the Azure SDK really sleep between retries; tests
    record the requested waits instead of spending them.
    clock: the time the emulated clouds stamp launches and terminations with (EC2's
    LaunchTime and transition reasons, Azure's timeCreated); tests pass their fixed clock,
    so that what the cloud reports and what the service computes agree.
    arm_fd: a socket already listening for the Azure Resource Manager (instead of arm_port).
    finish_workflows: on leaving, wait (10 s at most) for the executions still running;
    `make run` does not (it says what it discards)."""
    retry_waits: list[float] = []
    azure_waits: list[float] = []
    with ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, {**FAKE_CREDENTIALS, **(extra_env or {})}))
        stack.enter_context(mock_aws(config=MOTO_CONFIG))
        router = LambdaRouter(step_handlers())
        stack.enter_context(
            mock.patch.object(
                LambdaSimpleBackend, "invoke",
                lambda backend, *args: router.invoke(backend, *args),
            )
        )
        if instant_retries:
            stack.enter_context(
                mock.patch.object(
                    retrier_decl, "time", types.SimpleNamespace(sleep=retry_waits.append)
                )
            )
        # EC2 terminates a terminated instance again without complaint; moto fails on the
        # network interface it already deleted with it. Make moto as idempotent as EC2.
        original_terminate = moto_instances.Instance.terminate

        def terminate_again(instance: Any) -> Any:
            if instance._state.name == "terminated":
                return copy.copy(instance._state)
            return original_terminate(instance)

        stack.enter_context(
            mock.patch.object(moto_instances.Instance, "terminate", terminate_again)
        )
        # moto parses the ASL document again for every execution (0.05-0.6 s each): parse
        # each document once.
        stack.enter_context(
            mock.patch.object(AmazonStateLanguageParser, "parse", staticmethod(_parse_once))
        )
        # DynamoDB applies a conditional write atomically; moto checks the condition and
        # writes without a lock, so two writers at once (an API call and a workflow step)
        # could both pass. And two launches at once share moto's generator of a subnet's
        # addresses ("generator already executing"). Serialise these writes, as AWS does.
        for backend, operation in SERIALISED_WRITES:
            stack.enter_context(
                mock.patch.object(
                    backend, operation, _serialised(getattr(backend, operation))
                )
            )
        fake = ArmFake()
        if clock is not None:
            naive = lambda: clock().astimezone(UTC).replace(tzinfo=None)  # noqa: E731
            stack.enter_context(mock.patch.object(moto_instances, "utcnow", naive))
            fake.clock = clock
        arm = stack.enter_context(served(fake, port=arm_port, fd=arm_fd, poll_interval=0.5))
        settings = provision_resources(poll_seconds, max_checks, arm)
        azure = azure_connection(arm, azure_waits.append if instant_retries else None)
        emulation = EmulatedAws(
            settings, router, retry_waits, arm, azure, azure_waits, MotoBaseline.take()
        )
        yield emulation
        if finish_workflows:
            emulation.wait_for_workflows(timeout=10)


def azure_settings(arm: ServedArm) -> AzureSettings:
    """Azure settings that point at the local Resource Manager's subscription and subnet."""
    return AzureSettings(
        subscription_id=arm.fake.subscription_id,
        resource_group=arm.fake.resource_group,
        location=arm.fake.location,
        subnet_id=arm.fake.subnet_id,
        image_reference=AZURE_IMAGE,
        admin_username=AZURE_ADMIN,
        ssh_public_key=AZURE_SSH_KEY,
        arm_endpoint=arm.url,
    )


def azure_connection(
    arm: ServedArm, sleep: Callable[[float], None] | None = None
) -> AzureConnection:
    """A real credential (a service principal's client secret, exchanged for a token at the
    fake's token endpoint) and a transport that trusts the fake's certificate."""
    from azure.identity import ClientSecretCredential

    transport_options = {"connection_verify": arm.ca_bundle, "use_env_settings": False}
    credential = ClientSecretCredential(
        arm.fake.tenant_id,
        arm.fake.client_id,
        arm.fake.client_secret,
        authority=arm.url,
        disable_instance_discovery=True,
        **transport_options,
    )
    if sleep is None:
        return AzureConnection(credential, transport_options)
    return AzureConnection(credential, transport_options, sleep)


def provision_resources(poll_seconds: int, max_checks: int, arm: ServedArm) -> Settings:
    """Create table, bus and state machine, pick an AMI and subnet for EC2, and point the
    Azure settings at the local Resource Manager."""
    base = Settings.from_env(
        {"DEPLOYMENT_NAME": DEPLOYMENT_NAME, **os.environ, "STAGE": STAGE, "AWS_REGION": REGION}
    )
    configure_instance_model(base.table_name, REGION)
    create_instance_table()
    configure_control_model(base.control_table_name, REGION)
    create_control_table()
    events = boto3.client("events", region_name=REGION)
    events.create_event_bus(Name=base.event_bus_name)
    machines = {workflow.name: create_state_machine(workflow) for workflow in WORKFLOWS}
    ec2 = boto3.client("ec2", region_name=REGION)
    image = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}]
    )["Images"][0]
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
        "Subnets"
    ][0]
    group = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]
    # An account's AWS-managed EBS key (alias/aws/ebs) is made with its first encrypted
    # volume, as every launch's root volume is: make it now, once (an RSA key in moto).
    volume = ec2.create_volume(
        AvailabilityZone=subnet["AvailabilityZone"], Size=1, Encrypted=True
    )
    ec2.delete_volume(VolumeId=volume["VolumeId"])
    return Settings(
        stage=STAGE,
        region=REGION,
        table_name=base.table_name,
        control_table_name=base.control_table_name,
        event_bus_name=base.event_bus_name,
        state_machine_arn=machines["lifecycle"],
        release_state_machine_arn=machines["release"],
        deployment_name=base.deployment_name,
        ec2=Ec2Settings(
            ami_id=image["ImageId"],
            subnet_id=subnet["SubnetId"],
            security_group_ids=(group["GroupId"],),
        ),
        azure=azure_settings(arm),
        policy=base.policy,
        # The machines' agents call the service here (`make run` sets its own port).
        agent=replace(
            base.agent, callback_url=base.agent.callback_url or "http://127.0.0.1:8000"
        ),
        workflow_poll_seconds=poll_seconds,
        workflow_max_checks=max_checks,
        release_poll_seconds=poll_seconds,
        release_max_checks=max_checks,
    )


def create_state_machine(workflow: WorkflowDefinition) -> str:
    """The workflow's state machine, named as a deployment names it, its Tasks bound to the
    step handlers of app.py (through the Lambda router)."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arns = {key: function_arn(name) for key, name in workflow.task_functions.items()}
    return str(sfn.create_state_machine(
        name=f"{APP_NAME}-{STAGE}-{workflow.name}",
        definition=workflow.render(arns),
        roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{APP_NAME}-{STAGE}-{workflow.name}",
        type="STANDARD",
    )["stateMachineArn"])
