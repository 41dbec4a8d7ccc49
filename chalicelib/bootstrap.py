"""The composition root: builds settings, clients, repositories and services lazily, once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from chalicelib.domain.catalog import Catalog, load_catalog
from chalicelib.domain.errors import ServiceNotConfiguredError
from chalicelib.settings import Settings

if TYPE_CHECKING:
    # Types only: each getter imports its module when it is first asked for (cold paths
    # build only what they use), and the boto3 client types come from the dev-only stubs.
    import boto3.session
    import botocore.session
    from botocore.client import BaseClient
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_ec2.client import EC2Client
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_stepfunctions.client import SFNClient

    from chalicelib.domain.events import Event
    from chalicelib.events.eventbridge import EventBridgePublisher
    from chalicelib.persistence.control import DynamoDbLeases
    from chalicelib.persistence.dynamodb import DynamoDbInstanceRepository
    from chalicelib.persistence.idempotency import PowertoolsIdempotency
    from chalicelib.providers.azure_compute import AzureConnection
    from chalicelib.providers.base import CloudProvider
    from chalicelib.providers.registry import ProviderRegistry
    from chalicelib.services.agent import AgentService
    from chalicelib.services.costs import CostService
    from chalicelib.services.instances import InstanceService
    from chalicelib.services.lifecycle import Lifecycle
    from chalicelib.services.quotas import QuotaService, UsageReleasingRepository
    from chalicelib.services.reaper import Reaper
    from chalicelib.services.release import ReleaseSteps
    from chalicelib.services.steps import LifecycleSteps
    from chalicelib.workflow.stepfunctions import StepFunctionsWorkflowStarter

AwsService = Literal["ec2", "events", "stepfunctions", "dynamodb"]
# Builds the boto3 client of a service in a region (tests and the local run point it at moto).
AwsClientFactory = Callable[[AwsService, str], "BaseClient"]
Built = TypeVar("Built")


def utc_now() -> datetime:
    return datetime.now(UTC)


class built_once(Generic[Built]):  # noqa: N801 (named like the cached_property it replaces)
    """functools.cached_property whose first build holds the container's lock: threads that
    ask at once (`make run` serves a thread per connection) get one object, built once, and
    so one client of each kind. Since Python 3.12, cached_property takes no lock at all.
    The lock is reentrant (a getter asks for others) and is taken only until the value is
    cached: later reads find it in the instance's __dict__, as with cached_property."""

    def __init__(self, build: Callable[[Any], Built]) -> None:
        self._build = build
        self._name = build.__name__
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, container: None, owner: type) -> built_once[Built]: ...
    @overload
    def __get__(self, container: Container, owner: type) -> Built: ...
    def __get__(self, container: Container | None, owner: type) -> built_once[Built] | Built:
        if container is None:
            return self
        with container.build_lock:
            cache = container.__dict__
            if self._name not in cache:
                cache[self._name] = self._build(container)
            built: Built = cache[self._name]
            return built


class Container:
    """Everything a handler needs; nothing is built until a handler asks for it."""

    def __init__(
        self,
        settings: Settings | None = None,
        clock: Callable[[], datetime] = utc_now,
        aws_client: AwsClientFactory | None = None,
        azure_connection: AzureConnection | None = None,
        botocore_session: botocore.session.Session | None = None,
    ) -> None:
        self._settings = settings
        # A session that outlives the container (tests build a container per test and share
        # one session, whose loaded SDK models are then parsed once); else one of its own.
        self._botocore_session = botocore_session
        self.clock = clock
        self._aws_client = aws_client
        # An AzureConnection (credential, transport options, sleep); None in a deployment,
        # where the provider uses DefaultAzureCredential.
        self._azure_connection = azure_connection
        # Held while a getter builds (see built_once) and while a client is built.
        self.build_lock = threading.RLock()

    @built_once
    def settings(self) -> Settings:
        return self._settings or Settings.from_env()

    @built_once
    def botocore_session(self) -> botocore.session.Session:
        """One botocore session for every client of this container, PynamoDB's and boto3's:
        the SDK's JSON models and endpoint data are loaded once, not once per library."""
        if self._botocore_session is not None:
            return self._botocore_session
        import botocore.session

        return botocore.session.get_session()

    @built_once
    def boto3_session(self) -> boto3.session.Session:
        """boto3's clients of this container, on its one botocore session."""
        import boto3.session

        return boto3.session.Session(botocore_session=self.botocore_session)

    @overload
    def aws_client(self, service: Literal["ec2"], region: str | None = None) -> EC2Client: ...
    @overload
    def aws_client(
        self, service: Literal["events"], region: str | None = None
    ) -> EventBridgeClient: ...
    @overload
    def aws_client(
        self, service: Literal["stepfunctions"], region: str | None = None
    ) -> SFNClient: ...
    @overload
    def aws_client(
        self, service: Literal["dynamodb"], region: str | None = None
    ) -> DynamoDBClient: ...
    def aws_client(self, service: AwsService, region: str | None = None) -> BaseClient:
        if self._aws_client is not None:
            return self._aws_client(service, region or self.settings.region)
        from botocore.config import Config

        # A botocore session is not safe to build clients from in two threads at once.
        with self.build_lock:
            return self.boto3_session.client(
                service,
                region_name=region or self.settings.region,
                # Short timeouts: a hung call must fail (and be retried by the workflow or
                # the next tick) well within the Lambda timeouts, not hold the function to
                # its end.
                config=Config(
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=5,
                    read_timeout=15,
                ),
            )

    @built_once
    def catalog(self) -> Catalog:
        return load_catalog().allowing_previous_generation(
            self.settings.allow_previous_generation
        )

    @built_once
    def records(self) -> DynamoDbInstanceRepository:
        """The DynamoDB repository itself (without the quota release of `repository`)."""
        from chalicelib.persistence.dynamodb import (
            DynamoDbInstanceRepository,
            configure_instance_model,
        )

        # Its client is built here, under the lock, on the container's session: concurrent
        # first requests do not each build one (PynamoDB builds it at the first call).
        configure_instance_model(
            self.settings.table_name, self.settings.region, session=self.botocore_session
        )
        return DynamoDbInstanceRepository(self.settings.policy)

    @built_once
    def repository(self) -> UsageReleasingRepository:
        from chalicelib.services.quotas import UsageReleasingRepository

        return UsageReleasingRepository(self.records, self.quotas)

    @built_once
    def quotas(self) -> QuotaService:
        from chalicelib.persistence.usage import DynamoDbUsage
        from chalicelib.services.quotas import QuotaService

        store = DynamoDbUsage(self.settings.control_table_name, lambda: self.control_client)
        return QuotaService(store, self.records, self.clock, self.settings.limits)

    @built_once
    def control_client(self) -> DynamoDBClient:
        """boto3's DynamoDB client of the control table (usage, limits, idempotency)."""
        return self.aws_client("dynamodb")

    @built_once
    def providers(self) -> ProviderRegistry:
        from chalicelib.providers.registry import ProviderRegistry

        def aws() -> CloudProvider:
            from chalicelib.providers.aws_ec2 import Ec2Provider

            clients: dict[str, EC2Client] = {}

            def ec2_client(region: str) -> EC2Client:
                with self.build_lock:  # two workflow steps at once build one client
                    if region not in clients:
                        clients[region] = self.aws_client("ec2", region)
                    return clients[region]

            return Ec2Provider(
                self.settings.ec2, ec2_client, self.settings.deployment_name,
                self.settings.cost_tags,
            )

        def azure() -> CloudProvider:
            # Builds no client and imports no Azure SDK: that waits for the first Azure call.
            from chalicelib.providers.azure_compute import AzureComputeProvider

            return AzureComputeProvider(
                self.settings.azure, self._azure_connection,
                deployment=self.settings.deployment_name,
                cost_tags=self.settings.cost_tags,
            )

        return ProviderRegistry(
            factories={"aws": aws, "azure": azure},
            regions={"aws": self.settings.region, "azure": self.settings.azure.location or ""},
            missing_settings={
                "aws": self.settings.ec2.missing,
                "azure": self.settings.azure.missing,
            },
        )

    @built_once
    def events(self) -> EventBridgePublisher:
        from chalicelib.events.eventbridge import EventBridgePublisher

        return EventBridgePublisher(self.aws_client("events"), self.settings.event_bus_name)

    @built_once
    def workflow(self) -> StepFunctionsWorkflowStarter:
        from chalicelib.workflow.stepfunctions import StepFunctionsWorkflowStarter

        if not self.settings.state_machine_arn:
            raise ServiceNotConfiguredError(
                "Provisioning is unavailable: LIFECYCLE_STATE_MACHINE_ARN is not set."
            )
        return StepFunctionsWorkflowStarter(
            self.aws_client("stepfunctions"), self.settings.state_machine_arn
        )

    @built_once
    def release_workflow(self) -> StepFunctionsWorkflowStarter:
        from chalicelib.workflow.stepfunctions import StepFunctionsWorkflowStarter

        if not self.settings.release_state_machine_arn:
            raise ServiceNotConfiguredError(
                "Stopping at once is unavailable: RELEASE_STATE_MACHINE_ARN is not set."
            )
        return StepFunctionsWorkflowStarter(
            self.aws_client("stepfunctions"), self.settings.release_state_machine_arn
        )

    @built_once
    def leases(self) -> DynamoDbLeases:
        from chalicelib.persistence.control import DynamoDbLeases, configure_control_model

        configure_control_model(
            self.settings.control_table_name, self.settings.region, self.botocore_session
        )
        return DynamoDbLeases()

    @built_once
    def idempotency(self) -> PowertoolsIdempotency:
        from chalicelib.persistence.idempotency import PowertoolsIdempotency

        return PowertoolsIdempotency(self.settings.control_table_name, self.control_client)

    @built_once
    def lifecycle(self) -> Lifecycle:
        from chalicelib.services.lifecycle import Lifecycle

        # A read publishes no event: the EventBridge client waits for the first one.
        return Lifecycle(
            self.repository, self.providers, _LazyPublisher(lambda: self.events), self.clock
        )

    @built_once
    def instances(self) -> InstanceService:
        from chalicelib.services.instances import InstanceService, WorkflowTiming

        return InstanceService(
            self.lifecycle,
            self.catalog,
            _LazyWorkflow(lambda: self.workflow),
            WorkflowTiming(
                poll_seconds=self.settings.workflow_poll_seconds,
                max_checks=self.settings.workflow_max_checks,
                agent_timeout_seconds=self.settings.agent.ready_timeout_minutes * 60,
            ),
            _LazyWorkflow(lambda: self.release_workflow),
            WorkflowTiming(
                poll_seconds=self.settings.release_poll_seconds,
                max_checks=self.settings.release_max_checks,
            ),
            self.settings.default_lifetime_minutes,
            self.quotas,
        )

    @built_once
    def costs(self) -> CostService:
        from chalicelib.services.costs import CostService

        return CostService(self.repository, self.clock)

    @built_once
    def agent(self) -> AgentService:
        from chalicelib.services.agent import AgentService

        return AgentService(self.repository, self.clock, self.settings.agent)

    @built_once
    def steps(self) -> LifecycleSteps:
        from chalicelib.services.agent_bootstrap import stop_method
        from chalicelib.services.steps import LifecycleSteps

        agent = self.settings.agent
        self_delete = self.settings.azure.agent_identity_id is not None
        return LifecycleSteps(
            self.lifecycle, agent, lambda provider: stop_method(provider, agent, self_delete)
        )

    @built_once
    def reaper(self) -> Reaper:
        from chalicelib.services.reaper import Reaper

        return Reaper(self.lifecycle, self.settings.policy, self.leases, self.quotas)

    @built_once
    def release_steps(self) -> ReleaseSteps:
        from chalicelib.services.release import ReleaseSteps

        return ReleaseSteps(self.lifecycle, self.settings.policy)


class _LazyPublisher:
    """Defers building the EventBridge client until an event is first published."""

    def __init__(self, build: Callable[[], EventBridgePublisher]) -> None:
        self._build = build

    def publish_many(self, events: Sequence[Event]) -> None:
        self._build().publish_many(events)


class _LazyWorkflow:
    """Defers building the Step Functions client until a workflow is actually started."""

    def __init__(self, build: Callable[[], StepFunctionsWorkflowStarter]) -> None:
        self._build = build

    def execution_id(self, execution_name: str) -> str:
        return self._build().execution_id(execution_name)

    def start(self, execution_name: str, execution_input: Mapping[str, object]) -> str:
        return self._build().start(execution_name, execution_input)


_container: Container | None = None
_making_container = threading.Lock()


def container() -> Container:
    global _container
    if _container is None:
        with _making_container:  # two first requests at once: one container
            if _container is None:
                _container = Container()
    return _container


def use(new_container: Container | None) -> None:
    """Replace the container (tests and the local run inject a clock or settings)."""
    global _container
    _container = new_container
