"""Shared fixtures: a fixed clock, the embedded AWS emulation, and an API client."""

from __future__ import annotations

import gc
import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from chalice.test import Client

from chalicelib import bootstrap
from chalicelib.bootstrap import Container
from local.emulator import EmulatedAws, emulated_aws
from tests.simulated_agents import SimulatedAgents

START = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


_ENVIRONMENT = os.environ


@pytest.fixture(autouse=True)
def _environment_put_back() -> Iterator[None]:
    """chalice.test's clients replace os.environ with a copy holding the stage's variables
    for each call, then put back what they found: two calls at once (a request while a
    workflow thread makes another) can leave the copy in place, and the next test's
    subprocesses would inherit the dev stage's settings (make run's 15 s polls)."""
    yield
    if os.environ is not _ENVIRONMENT:
        os.environ = _ENVIRONMENT  # noqa: B003 (putting back the real one, not clearing)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class CloudFaults:
    """Makes chosen AWS calls fail the way AWS fails them: the real boto3 client is built,
    and a botocore before-call hook answers with an error response (parsed into ClientError
    by botocore itself), so every layer above the SDK runs for real."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], list[str]] = {}
        self.answers: dict[tuple[str, str], dict] = {}
        self.answer_times: dict[tuple[str, str], int] = {}
        self.calls: list[tuple[str, str]] = []

    def fail(self, service: str, operation: str, code: str, times: int = 1) -> None:
        self.pending.setdefault((service, operation), []).extend([code] * times)

    def answer(
        self, service: str, operation: str, parsed: dict, times: int | None = None
    ) -> None:
        """Answer `operation` calls (every one, or the next `times`) with `parsed` as a
        success, without running them."""
        self.answers[(service, operation)] = parsed
        if times is not None:
            self.answer_times[(service, operation)] = times

    def client(self, service: str, region: str) -> Any:
        return _CLIENTS.client(service, region, self)

    def before_call(self, model: Any, **_: Any) -> Any:
        service = model.service_model.service_name
        key = (service, model.name)
        self.calls.append(key)
        if key in self.answers:
            parsed = self.answers[key]
            if key in self.answer_times:
                self.answer_times[key] -= 1
                if self.answer_times[key] <= 0:
                    del self.answers[key], self.answer_times[key]
            return AWSResponse("https://emulated", 200, {}, None), parsed
        codes = self.pending.get(key)
        if not codes:
            return None
        code = codes.pop(0)
        response = AWSResponse("https://emulated", 400, {}, None)
        return response, {
            # AWS's own messages name roles, accounts and resources: so do these.
            "Error": {"Code": code, "Message": f"injected {code} for arn:aws:iam::"
                      "123456789012:role/instance-provisioner-prod-launch on table/secret"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }


class _SessionClients:
    """The real boto3 clients of a test session, one per service and region (building one
    takes tens of milliseconds, an EC2 client's ~700 methods included); each answers through
    the running test's CloudFaults, and the event handlers a test registers on one are
    unregistered when it ends."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.faults: CloudFaults | None = None
        self._registered: list[tuple[Any, str, Any]] = []

    def client(self, service: str, region: str, faults: CloudFaults) -> Any:
        self.faults = faults
        with self._lock:
            if (service, region) not in self._clients:
                client = boto3.client(service, region_name=region)
                client.meta.events.register("before-call", self._before_call)
                self._record_registrations(client.meta.events)
                self._clients[(service, region)] = client
            return self._clients[(service, region)]

    def _record_registrations(self, emitter: Any) -> None:
        for name in ("register", "register_first", "register_last"):
            setattr(emitter, name, self._recording(emitter, getattr(emitter, name)))

    def _recording(self, emitter: Any, register: Callable[..., Any]) -> Callable[..., Any]:
        def recording(event: str, handler: Any, *args: Any, **kwargs: Any) -> Any:
            self._registered.append((emitter, event, handler))
            return register(event, handler, *args, **kwargs)

        return recording

    def end_test(self) -> None:
        self.faults = None
        for emitter, event, handler in self._registered:
            emitter.unregister(event, handler)
        self._registered.clear()

    def _before_call(self, **kwargs: Any) -> Any:
        return self.faults.before_call(**kwargs) if self.faults is not None else None


_CLIENTS = _SessionClients()


@pytest.fixture
def faults() -> Iterator[CloudFaults]:
    yield CloudFaults()
    _CLIENTS.end_test()


class CurrentClock:
    """The clock the session's emulated clouds stamp launches with: the running test's."""

    def __init__(self) -> None:
        self.clock: Callable[[], datetime] | None = None

    def __call__(self) -> datetime:
        return self.clock() if self.clock is not None else datetime.now(UTC)


@pytest.fixture(scope="session")
def botocore_session() -> Any:
    """The botocore session of every test's container (PynamoDB's clients are built on it):
    the SDK's models are parsed once per worker, not once per test."""
    import botocore.session

    return botocore.session.get_session()


@pytest.fixture(scope="session")
def emulation() -> Iterator[tuple[EmulatedAws, CurrentClock]]:
    """One emulation per test session (per xdist worker): moto, its state machines and
    tables and the local Azure Resource Manager are made once; `aws` resets them after
    each test."""
    current = CurrentClock()
    with emulated_aws(clock=current, finish_workflows=False) as emulated:
        # moto's backends are a few hundred thousand objects that live as long as the
        # worker: keep them out of the collector's full passes (each took about 0.35 s).
        gc.collect()
        gc.freeze()
        yield emulated, current


@pytest.fixture
def aws(
    clock: FakeClock, faults: CloudFaults, emulation: tuple[EmulatedAws, CurrentClock],
    botocore_session: Any,
) -> Iterator[EmulatedAws]:
    emulated, current = emulation
    current.clock = clock
    bootstrap.use(
        Container(
            settings=emulated.settings, clock=clock, aws_client=faults.client,
            azure_connection=emulated.azure, botocore_session=botocore_session,
        )
    )
    try:
        yield emulated
    finally:
        emulated.reset()
        bootstrap.use(None)
        current.clock = None


@pytest.fixture
def agents(aws: EmulatedAws) -> Iterator[SimulatedAgents]:
    """The emulated machines' agents: each reports healthy GPUs when the workflow first asks
    (set `behaviour[instance id or "default"]` for another answer)."""
    import app

    with Client(app.app) as client:
        def post(path: str, body: dict, headers: dict[str, str]) -> tuple[int, Any]:
            response = client.http.post(
                path, body=json.dumps(body),
                headers={"Content-Type": "application/json", **headers},
            )
            return response.status_code, json.loads(response.body or b"null")

        simulated = SimulatedAgents(post, aws.arm_fake)
        aws.router.before_step = simulated.before_step
        yield simulated
        aws.router.before_step = None


@pytest.fixture
def lifecycle_events(aws: EmulatedAws) -> Callable[[], list[dict]]:
    """The lifecycle events put on the bus, read back through a rule and an SQS queue."""
    sqs = boto3.client("sqs", region_name=aws.settings.region)
    events = boto3.client("events", region_name=aws.settings.region)
    queue_url = sqs.create_queue(QueueName="lifecycle-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    bus = aws.settings.event_bus_name
    events.put_rule(
        Name="all-lifecycle-events",
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["instance-provisioner"]}),
    )
    events.put_targets(
        Rule="all-lifecycle-events", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}]
    )
    received: list[dict] = []

    def read() -> list[dict]:
        while True:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not messages:
                return received
            for message in messages:
                received.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    return read


class Api:
    """Calls the Chalice app as API Gateway would, with a local dev token."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def call(
        self, method: str, path: str, user: str | None = "alice", body: Any = None,
        raw_body: str | None = None, headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if user is not None:
            all_headers.setdefault("Authorization", f"Bearer dev:{user}")
        payload = raw_body if raw_body is not None else (
            json.dumps(body) if body is not None else None
        )
        kwargs: dict[str, Any] = {"headers": all_headers}
        if payload is not None:
            kwargs["body"] = payload
        response = getattr(self.client.http, method.lower())(path, **kwargs)
        parsed = json.loads(response.body) if response.body else None
        return response.status_code, parsed, dict(response.headers)

    def get(self, instance_id: str, user: str = "alice") -> dict:
        status, instance, _ = self.call("GET", f"/api/instances/{instance_id}", user=user)
        assert status == 200, instance
        return instance

    def tick(self) -> dict:
        """Run the scheduled `reaper` function as EventBridge would."""
        event = self.client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        return self.client.lambda_.invoke("reaper", event).payload

    def provision(self, user: str = "alice", **body: Any) -> dict:
        status, instance, _ = self.call(
            "POST", "/api/instances", user=user, body={"instanceType": "g4dn.xlarge", **body}
        )
        assert status == 202, instance
        return instance


@pytest.fixture(autouse=True)
def _machines_have_agents(request: pytest.FixtureRequest) -> None:
    """Every test that runs the emulation gets the simulated agents (READY needs them)."""
    if "aws" in request.fixturenames:
        request.getfixturevalue("agents")


@pytest.fixture
def api(aws: EmulatedAws) -> Iterator[Api]:
    import app

    with Client(app.app) as client:
        yield Api(client)


@pytest.fixture
def untracked_machine(aws: EmulatedAws) -> Callable[[str], str]:
    """Launches an EC2 machine tagged for a record behind the service's back, as a launch
    that reached the cloud but never got its id stored would; returns its instance id."""
    from chalicelib.providers.base import DEPLOYMENT_TAG, MANAGED_TAG, RECORD_ID_TAG

    def launch(record_id: str) -> str:
        ec2 = boto3.client("ec2", region_name=aws.settings.region)
        return ec2.run_instances(
            ImageId=aws.settings.ec2.ami_id, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": MANAGED_TAG, "Value": "true"},
                {"Key": DEPLOYMENT_TAG, "Value": aws.settings.deployment_name},
                {"Key": RECORD_ID_TAG, "Value": record_id},
            ]}],
        )["Instances"][0]["InstanceId"]

    return launch


class StoreFaults:
    """Makes chosen DynamoDB calls of the service's records fail as DynamoDB fails them, on
    PynamoDB's own botocore client (so PynamoDB wraps them as it would)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, str, Callable[[dict], bool]]] = []

    def fail(
        self, operation: str, code: str, times: int = 1,
        when: Callable[[dict], bool] = lambda params: True,
    ) -> None:
        self.pending.extend([(operation, code, when)] * times)

    def before_call(self, model: Any, params: dict, **_: Any) -> Any:
        request = json.loads(params.get("body") or b"{}")  # the operation's own parameters
        for index, (operation, code, when) in enumerate(self.pending):
            if operation == model.name and when(request):
                del self.pending[index]
                response = AWSResponse("https://emulated", 400, {}, None)
                return response, {
                    "Error": {"Code": code, "Message": f"injected {code} on "
                              "arn:aws:dynamodb:us-east-1:123456789012:table/secret-table"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                }
        return None


@pytest.fixture
def store_faults(aws: EmulatedAws) -> StoreFaults:
    from chalicelib.persistence.dynamodb import InstanceModel

    faults = StoreFaults()
    _ = bootstrap.container().repository  # points the model at the table first (a new client)
    InstanceModel._get_connection().connection.client.meta.events.register(
        "before-call", faults.before_call
    )
    return faults


@pytest.fixture
def dynamodb_calls(aws: EmulatedAws) -> list[str]:
    """The names of the DynamoDB operations the service's records make (PynamoDB's own
    client, which CloudFaults does not build), in order."""
    from chalicelib.persistence.dynamodb import InstanceModel

    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    _ = bootstrap.container().repository  # points the model at the table first (a new client)
    InstanceModel._get_connection().connection.client.meta.events.register(
        "before-call", record
    )
    return calls
