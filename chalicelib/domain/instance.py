"""The instance record as the domain sees it, and the pure rules that change it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from chalicelib.domain.agent import GpuReport, Heartbeat
from chalicelib.domain.billing import run_cost
from chalicelib.domain.catalog import BillingRule
from chalicelib.domain.states import (
    IN_SERVICE_STATUSES,
    InstanceStatus,
    check_transition,
)

MIN_IDLE_TIMEOUT_MINUTES = 5
MAX_IDLE_TIMEOUT_MINUTES = 120
DEFAULT_IDLE_TIMEOUT_MINUTES = 30
# A hard cap on an instance's life, whatever its activity: 10 minutes to a week.
MIN_LIFETIME_MINUTES = 10
MAX_LIFETIME_MINUTES = 10_080
DEFAULT_LIFETIME_MINUTES = 720
# How long before an idle or lifetime stop the `Instance Expiring` warning goes out.
EXPIRY_WARNING = timedelta(minutes=5)
# Older entries are dropped so a busy READY<->RUNNING instance cannot outgrow its item.
MAX_HISTORY_ENTRIES = 50


@dataclass(frozen=True)
class LifecyclePolicy:
    """How long an instance may sit in a transitional state before the reaper calls it stuck,
    how soon an unanswered terminate is sent again, and how young a machine the reconciler
    leaves alone."""

    provisioning_limit: timedelta = timedelta(minutes=15)
    configuring_limit: timedelta = timedelta(minutes=15)
    stopping_limit: timedelta = timedelta(minutes=10)
    # A terminate the cloud did not carry out is sent again after 30 s, 60 s, 120 s, ...
    terminate_retry_base: timedelta = timedelta(seconds=30)
    terminate_retry_max: timedelta = timedelta(minutes=15)
    # A machine younger than this may still be being recorded (its launch is in flight):
    # the reconciler neither calls it an orphan nor its record's machine gone.
    orphan_grace: timedelta = timedelta(seconds=120)
    # An agent that reported (at boot, in heartbeats) and then nothing for this long has gone
    # silent: the tick asks the cloud whether its machine is powered off (3 heartbeats).
    agent_silence: timedelta = timedelta(minutes=3)

    def terminate_backoff(self, attempts: int) -> timedelta:
        """How long after the `attempts`-th terminate request the next one is due."""
        if attempts <= 0:
            return timedelta(0)
        return min(self.terminate_retry_base * (1 << (attempts - 1)), self.terminate_retry_max)

    def limit_for(self, status: InstanceStatus) -> timedelta | None:
        return {
            InstanceStatus.PROVISIONING: self.provisioning_limit,
            InstanceStatus.CONFIGURING: self.configuring_limit,
            InstanceStatus.STOPPING: self.stopping_limit,
        }.get(status)


@dataclass(frozen=True)
class StatusChange:
    status: InstanceStatus
    at: datetime
    reason: str | None = None


@dataclass(frozen=True)
class Instance:
    id: str
    user_id: str
    provider: str
    region: str
    instance_type: str
    gpu_model: str
    gpu_count: int
    hourly_usd: Decimal
    billing_rule: BillingRule
    idle_timeout_minutes: int
    status: InstanceStatus
    created_at: datetime
    updated_at: datetime
    status_entered_at: datetime
    last_activity_at: datetime
    task_id: str | None = None
    status_reason: str | None = None
    cloud_resource_id: str | None = None
    private_ip: str | None = None
    public_ip: str | None = None
    # Billing runs from the moment the cloud accepted the launch to the moment it
    # accepted the termination; a record with no launch is never charged.
    launched_at: datetime | None = None
    billing_ended_at: datetime | None = None
    accrued_cost: Decimal = Decimal("0.000000")
    accrued_until: datetime | None = None
    ready_at: datetime | None = None
    terminated_at: datetime | None = None
    execution_id: str | None = None
    # The last time the service asked the cloud to terminate the machine, and how often it
    # has: a stop the cloud does not carry out is asked again, with backoff, until it is.
    terminate_requested_at: datetime | None = None
    terminate_attempts: int = 0
    # When a STOPPING instance was first reported stuck (the alarm is raised once).
    stuck_reported_at: datetime | None = None
    # The hard cap on its life, counted from its creation (the POST).
    max_lifetime_minutes: int = DEFAULT_LIFETIME_MINUTES
    # The deadline the last `Instance Expiring` warning was about (one warning per deadline).
    expiry_warned_for: datetime | None = None
    # The agent on the machine: the hash of its secret, what it found at boot, its last
    # heartbeat; and the last evidence of activity (a client's report, or a busy GPU).
    agent_secret_hash: str | None = None
    gpu_report: GpuReport | None = None
    last_heartbeat: Heartbeat | None = None
    last_evidence_at: datetime | None = None
    last_evidence_source: str | None = None
    status_history: tuple[StatusChange, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int | None = None

    # -- derived figures -------------------------------------------------------------

    def cost_at(self, now: datetime) -> Decimal:
        """Cost up to `now` (or to the end of billing, if it ended earlier)."""
        end = self.billing_ended_at if self.billing_ended_at is not None else now
        return run_cost(self.hourly_usd, self.billing_rule, self.launched_at, end)

    def idle_deadline(self) -> datetime:
        return self.last_activity_at + timedelta(minutes=self.idle_timeout_minutes)

    def lifetime_deadline(self) -> datetime:
        return self.created_at + timedelta(minutes=self.max_lifetime_minutes)

    def next_stop(self) -> tuple[datetime, str] | None:
        """When, and why, the instance will be stopped unless something changes: the earlier
        of its lifetime and (in service) its idle deadline. None once it is stopping."""
        if self.status is InstanceStatus.STOPPING or self.status.is_terminal:
            return None
        stops = [(self.lifetime_deadline(), "max_lifetime")]
        if self.status in IN_SERVICE_STATUSES:
            stops.append((self.idle_deadline(), "idle_timeout"))
        return min(stops)

    def due_at(self, policy: LifecyclePolicy) -> datetime | None:
        """When the reaper must next look at this instance; None once it is finished."""
        if self.status.is_terminal:
            return None
        if self.status is InstanceStatus.STOPPING:
            # A stopping instance is due at once: every tick asks the cloud whether it is gone.
            return self.status_entered_at
        stop = self.next_stop()
        assert stop is not None
        if self.status in IN_SERVICE_STATUSES:
            return stop[0]
        limit = policy.limit_for(self.status)
        assert limit is not None
        return min(self.status_entered_at + limit, stop[0])

    def is_stuck(self, now: datetime, policy: LifecyclePolicy) -> bool:
        limit = policy.limit_for(self.status)
        return limit is not None and now >= self.status_entered_at + limit

    def terminate_due(self, now: datetime, policy: LifecyclePolicy) -> bool:
        """Whether a (new) terminate request may be sent for this stopping instance now."""
        if self.status is not InstanceStatus.STOPPING:
            return False
        if self.terminate_requested_at is None:
            return True
        return now >= self.terminate_requested_at + policy.terminate_backoff(
            self.terminate_attempts
        )

    def agent_is_silent(self, now: datetime, policy: LifecyclePolicy) -> bool:
        """In service, its agent has reported (at boot, or in heartbeats since), and nothing
        for the silence period."""
        if self.status not in IN_SERVICE_STATUSES:
            return False
        if self.last_heartbeat is not None:
            heard = self.last_heartbeat.at
        elif self.gpu_report is not None:
            heard = self.gpu_report.reported_at
        else:
            return False  # no agent (or not one that ever spoke): nothing went silent
        return now - heard >= policy.agent_silence

    def is_young(self, now: datetime, policy: LifecyclePolicy) -> bool:
        """Launched (or, with no launch time, created) less than the grace period ago."""
        since = self.launched_at or self.created_at
        return now - since < policy.orphan_grace

    @property
    def is_billing(self) -> bool:
        return self.launched_at is not None and self.billing_ended_at is None

    # -- changes ---------------------------------------------------------------------

    def transition(
        self, target: InstanceStatus, now: datetime, reason: str | None = None, **changes: Any
    ) -> Instance:
        """A copy moved to `target`; raises InvalidTransitionError if the lifecycle forbids it."""
        check_transition(self.status, target)
        history = (*self.status_history, StatusChange(target, now, reason))[-MAX_HISTORY_ENTRIES:]
        stamps: dict[str, Any] = {}
        if target is InstanceStatus.READY and self.ready_at is None:
            stamps["ready_at"] = now
        if target in IN_SERVICE_STATUSES:
            stamps["last_activity_at"] = now
        if target.is_terminal:
            stamps["terminated_at"] = now
        updated = replace(
            self,
            status=target,
            status_reason=reason,
            status_entered_at=now,
            updated_at=now,
            status_history=history,
            **{**stamps, **changes},
        )
        return updated.with_cost_accrued(now) if target.is_terminal else updated

    def with_cost_accrued(self, now: datetime) -> Instance:
        until = min(now, self.billing_ended_at) if self.billing_ended_at else now
        return replace(self, accrued_cost=self.cost_at(now), accrued_until=until, updated_at=now)

    def with_activity(self, now: datetime, source: str = "client") -> Instance:
        """Evidence of activity: the idle clock starts again."""
        return replace(
            self, last_activity_at=now, last_evidence_at=now, last_evidence_source=source,
            updated_at=now,
        )

    def with_terminate_requested(self, now: datetime) -> Instance:
        return replace(
            self,
            terminate_requested_at=now,
            terminate_attempts=self.terminate_attempts + 1,
            updated_at=now,
        )

    def with_cloud_launch(self, resource_id: str, launched_at: datetime | None) -> Instance:
        """The machine found for the record: its id, and billing from the cloud's own launch
        time when the record has none (the write after the launch was lost)."""
        return replace(
            self,
            cloud_resource_id=resource_id,
            launched_at=self.launched_at or launched_at,
        )

    def with_billing_ended(self, at: datetime) -> Instance:
        """Billing ends `at` (the cloud began deleting the machine, or reports it gone)."""
        if self.launched_at is None:
            return self
        return replace(self, billing_ended_at=max(at, self.launched_at))

    def with_billing_resumed(self) -> Instance:
        """The cloud still runs a machine whose termination it accepted: it is billed on."""
        return replace(self, billing_ended_at=None)
