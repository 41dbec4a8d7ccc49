"""Use cases behind the API: provision, read, list, stop, report activity, and stats."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from chalicelib.domain.agent import CLIENT
from chalicelib.domain.catalog import Catalog, Offer, Requirement
from chalicelib.domain.errors import (
    ConcurrentUpdateError,
    DomainError,
    InstanceNotFoundError,
    InvalidTransitionError,
    ProviderUnavailableError,
    UnsatisfiableRequestError,
    ValidationError,
)
from chalicelib.domain.identity import Caller
from chalicelib.domain.ids import new_instance_id
from chalicelib.domain.instance import DEFAULT_LIFETIME_MINUTES, Instance, StatusChange
from chalicelib.domain.states import InstanceStatus
from chalicelib.domain.stats import FleetStats, from_aggregates, summarize
from chalicelib.persistence.repository import InstanceRepository, ListQuery, Page
from chalicelib.services.lifecycle import Lifecycle
from chalicelib.services.ports import WorkflowStarter
from chalicelib.services.quotas import QuotaService
from chalicelib.services.release import release_execution_name

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ProvisionRequest:
    """Either a named `instance_type` or a `requirement` the cheapest type must meet."""

    instance_type: str | None = None
    requirement: Requirement | None = None
    provider: str | None = None
    region: str | None = None
    task_id: str | None = None
    idle_timeout_minutes: int = 30
    max_lifetime_minutes: int | None = None  # None: the deployment's default
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class WorkflowTiming:
    """Execution input for the lifecycle workflow (tests pass 0 seconds between checks)."""

    poll_seconds: int
    max_checks: int
    # How long the lifecycle workflow waits for the agent's GPU report.
    agent_timeout_seconds: int = 900


@dataclass(frozen=True)
class Provisioned:
    instance: Instance
    offer: Offer | None  # set when the type was picked from a requirement
    warnings: tuple[str, ...] = ()  # e.g. a previous-generation type


class WorkflowStartError(DomainError):
    """The lifecycle workflow could not be started; the record was marked ERROR."""

    code = "workflow_unavailable"


class InstanceService:
    def __init__(
        self,
        lifecycle: Lifecycle,
        catalog: Catalog,
        workflow: WorkflowStarter,
        timing: WorkflowTiming,
        release_workflow: WorkflowStarter,
        release_timing: WorkflowTiming,
        default_lifetime_minutes: int = DEFAULT_LIFETIME_MINUTES,
        quotas: QuotaService | None = None,
    ) -> None:
        self.quotas = quotas
        self.default_lifetime_minutes = default_lifetime_minutes
        self.lifecycle = lifecycle
        self.repository: InstanceRepository = lifecycle.repository
        self.catalog = catalog
        self.workflow = workflow
        self.timing = timing
        self.release_workflow = release_workflow
        self.release_timing = release_timing
        self.clock = lifecycle.clock

    # -- provision ------------------------------------------------------------------

    def provision(self, caller: Caller, request: ProvisionRequest) -> Provisioned:
        offer = None
        if request.requirement is not None:
            usable, unconfigured = self._usable_providers(request)
            offer = self.catalog.cheapest(request.requirement, usable)
            if offer.chosen is None:
                names = ", ".join(t.name for t, _ in offer.excluded)
                reasons = "; ".join(sorted({why for _, why in offer.excluded}))
                message = f"Only {names} meet the requirement, and none can be used: {reasons}."
                if unconfigured & {t.provider for t, _ in offer.excluded}:
                    raise ProviderUnavailableError(message)  # configuring it would help
                raise UnsatisfiableRequestError(message)
            instance_type = offer.chosen
        else:
            assert request.instance_type is not None
            instance_type = self.catalog.launchable(request.instance_type, request.provider)
        provider_name = instance_type.provider
        self.lifecycle.providers.get(provider_name)  # refuses an unconfigured provider early
        region = self.lifecycle.providers.region_for(provider_name)
        if request.region is not None and request.region != region:
            raise UnsatisfiableRequestError(
                f"Region {request.region!r} is not served for provider {provider_name}; "
                f"this deployment provisions in {region!r}.",
                fields=[{"field": "region", "problem": "not served", "allowed": region}],
            )
        now = self.clock()
        instance = Instance(
            id=new_instance_id(),
            user_id=caller.user_id,
            task_id=request.task_id,
            provider=provider_name,
            region=region,
            instance_type=instance_type.name,
            gpu_model=instance_type.gpu_model,
            gpu_count=instance_type.gpu_count,
            hourly_usd=instance_type.hourly_usd,
            billing_rule=instance_type.billing_rule,
            idle_timeout_minutes=request.idle_timeout_minutes,
            max_lifetime_minutes=request.max_lifetime_minutes or self.default_lifetime_minutes,
            status=InstanceStatus.PROVISIONING,
            created_at=now,
            updated_at=now,
            status_entered_at=now,
            last_activity_at=now,
            metadata=request.metadata or {},
            status_history=(StatusChange(InstanceStatus.PROVISIONING, now),),
        )
        instance = replace(instance, execution_id=self.workflow.execution_id(instance.id))
        if self.quotas is not None:
            self.quotas.reserve(instance)  # raises, holding nothing, past a limit
        try:
            stored = self.repository.add(instance)
        except Exception:
            if self.quotas is not None:
                self.quotas.release(instance)
            raise
        self.lifecycle.announce(stored)
        try:
            self.workflow.start(
                stored.id,
                {
                    "instanceId": stored.id,
                    "pollSeconds": self.timing.poll_seconds,
                    "maxChecks": self.timing.max_checks,
                    "agentTimeoutSeconds": self.timing.agent_timeout_seconds,
                },
            )
        except Exception as error:
            # Nothing was launched (only the workflow launches): record the failure as is.
            logger.exception("could not start the lifecycle workflow for %s", stored.id)
            self.lifecycle.move(stored, InstanceStatus.ERROR, "workflow_start_failed")
            raise WorkflowStartError(
                "The instance could not be started now; it was recorded as ERROR. Try again."
            ) from error
        return Provisioned(stored, offer, self.catalog.warnings_for(instance_type))

    def _usable_providers(self, request: ProvisionRequest) -> tuple[dict[str, str], set[str]]:
        """Each provider with "" if it can serve this request, or why it cannot; and the
        providers that are not configured at all."""
        registry = self.lifecycle.providers
        configured = registry.available()
        usable = {}
        for name in self.catalog.providers:
            if name not in configured:
                usable[name] = f"provider {name} is not configured in this deployment"
            elif request.region is not None and registry.region_for(name) != request.region:
                usable[name] = f"provider {name} provisions in {registry.region_for(name)}"
            else:
                usable[name] = ""
        return usable, set(self.catalog.providers) - configured

    # -- read -----------------------------------------------------------------------

    def get(self, caller: Caller, instance_id: str) -> Instance:
        instance = self.repository.get(instance_id)
        if instance is None or not caller.may_see(instance.user_id):
            # Someone else's instance answers exactly like a missing one.
            raise InstanceNotFoundError(f"No instance with id {instance_id!r}.")
        return instance

    def list(
        self,
        caller: Caller,
        status: InstanceStatus | None,
        task_id: str | None,
        limit: int,
        cursor: str | None,
        user_id: str | None = None,
    ) -> Page:
        owner: str | None = caller.user_id
        if caller.is_admin:
            owner = user_id  # operators see everyone unless they narrow to one user
        elif user_id is not None and user_id != caller.user_id:
            raise ValidationError(
                "Only operators may list another user's instances; omit userId.",
                fields=[{"field": "userId", "problem": "not yours", "allowed": caller.user_id}],
            )
        return self.repository.list(
            ListQuery(user_id=owner, status=status, task_id=task_id, limit=limit, cursor=cursor)
        )

    # -- stop -----------------------------------------------------------------------

    def terminate(self, caller: Caller, instance_id: str) -> Instance:
        def stop() -> Instance:
            instance = self.get(caller, instance_id)
            if instance.status.is_terminal or instance.status is InstanceStatus.STOPPING:
                return instance  # a repeated DELETE changes nothing
            return self.lifecycle.move(instance, InstanceStatus.STOPPING, "user_request")

        stopping = retry_on_race(stop)
        if stopping.status is InstanceStatus.STOPPING:
            self.hand_off_release(stopping)
        return stopping

    def hand_off_release(self, instance: Instance) -> None:
        """Start the release workflow, which has the cloud rights the API lacks: it asks the
        cloud to terminate the machine within seconds and finishes the record when the cloud
        confirms. If it cannot be started, the reaper's next tick does the same."""
        try:
            self.release_workflow.start(
                release_execution_name(instance.id),
                {
                    "instanceId": instance.id,
                    "pollSeconds": self.release_timing.poll_seconds,
                    "maxChecks": self.release_timing.max_checks,
                },
            )
        except Exception:
            # Already started (a repeated DELETE that raced the first), or Step Functions is
            # unavailable: the stop is recorded either way, and the tick is the safety net.
            logger.warning(
                "could not start the release of %s; the reaper's tick will", instance.id,
                exc_info=True,
            )

    # -- limits ---------------------------------------------------------------------

    def update_limits(
        self,
        caller: Caller,
        instance_id: str,
        idle_timeout_minutes: int | None,
        max_lifetime_minutes: int | None,
    ) -> Instance:
        if idle_timeout_minutes is None and max_lifetime_minutes is None:
            raise ValidationError(
                "Give autoTerminateMinutes, maxLifetimeMinutes or both.",
                fields=[{"field": "(body)", "problem": "no limit to change"}],
            )

        def update() -> Instance:
            instance = self.get(caller, instance_id)
            if instance.status.is_terminal or instance.status is InstanceStatus.STOPPING:
                raise InvalidTransitionError(
                    f"The limits of a {instance.status} instance cannot change; only a live "
                    "instance that is not stopping has limits."
                )
            now = self.clock()
            if max_lifetime_minutes is not None:
                lived = now - instance.created_at
                if timedelta(minutes=max_lifetime_minutes) < lived:
                    at_least = math.ceil(lived.total_seconds() / 60)
                    raise ValidationError(
                        f"maxLifetimeMinutes must be at least {at_least}: the instance has "
                        f"already lived {int(lived.total_seconds())} s.",
                        fields=[{"field": "maxLifetimeMinutes", "problem": "below the time "
                                 "already lived", "allowed": f"{at_least}-10080"}],
                    )
            return self._update(
                instance,
                idle_timeout_minutes=idle_timeout_minutes or instance.idle_timeout_minutes,
                max_lifetime_minutes=max_lifetime_minutes or instance.max_lifetime_minutes,
            )

        return retry_on_race(update)

    # -- activity -------------------------------------------------------------------

    def report_activity(self, caller: Caller, instance_id: str, state: str) -> Instance:
        target = InstanceStatus.RUNNING if state == "running" else InstanceStatus.READY

        def report() -> Instance:
            instance = self.get(caller, instance_id)
            if instance.status not in (InstanceStatus.READY, InstanceStatus.RUNNING):
                raise InvalidTransitionError(
                    f"Activity can be reported only for a READY or RUNNING instance; "
                    f"this one is {instance.status}."
                )
            if instance.status is target:
                # A heartbeat: same state, the idle clock starts again.
                return self._update(instance.with_activity(self.clock()))
            now = self.clock()
            return self.lifecycle.move(
                instance, target, f"activity:{state}",
                last_evidence_at=now, last_evidence_source=CLIENT,
            )

        return retry_on_race(report)

    # -- stats ----------------------------------------------------------------------

    def stats(self, caller: Caller) -> FleetStats:
        """From the finished totals kept at each finish and the live records (point reads
        of the ids holding quota usage), never from the history."""
        owner = None if caller.is_admin else caller.user_id
        if self.quotas is None:
            instances = self.repository.all_for_stats(owner)
            return summarize(instances, self.clock(), self.catalog.providers)
        finished, live_ids = self.quotas.store.aggregates(owner)
        # A record finished a moment ago but not yet released is in neither figure.
        live = [i for i in self.repository.get_many(live_ids) if i.status.is_live]
        rules = {t.billing_rule.name: t.billing_rule for t in self.catalog.instance_types}
        return from_aggregates(finished, live, self.clock(), self.catalog.providers, rules)

    # -- helpers --------------------------------------------------------------------

    def _update(self, instance: Instance, **changes: Any) -> Instance:
        updated = replace(instance, updated_at=self.clock(), **changes)
        return self.repository.save(updated, expected_status=instance.status)



RACE_ATTEMPTS = 3


def retry_on_race(action: Callable[[], Instance]) -> Instance:
    """Run a read-decide-write action again when another writer (the workflow, the reaper)
    changed the record in between; each attempt re-reads, so it decides on fresh state."""
    for _ in range(RACE_ATTEMPTS - 1):
        try:
            return action()
        except ConcurrentUpdateError:
            continue
    return action()
