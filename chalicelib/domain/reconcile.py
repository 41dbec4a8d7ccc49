"""What to do about each live record and each managed machine, given one look at the cloud:
a pure function of (records, snapshot, now, policy), like a scheduler's decide()."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from chalicelib.domain.cloud import CloudMachine, CloudSnapshot, CloudState
from chalicelib.domain.instance import EXPIRY_WARNING, Instance, LifecyclePolicy
from chalicelib.domain.states import IN_SERVICE_STATUSES, InstanceStatus

TERMINATED_OUTSIDE_SERVICE = "terminated_outside_service"
POWERED_OFF_OUTSIDE_SERVICE = "powered_off_outside_service"


class Action(StrEnum):
    """One change a tick (or a release step) makes for a record."""

    # Past its idle deadline (READY/RUNNING) or its lifetime (any live status): STOPPING,
    # then terminate; the reason says which (idle_timeout, max_lifetime).
    STOP = "stop"
    WARN_EXPIRY = "warn_expiry"  # a stop is due within EXPIRY_WARNING: say so, once
    FINISH = "finish"  # the machine is gone: TERMINATED, billed to when it went
    SEND_TERMINATE = "send_terminate"  # STOPPING and its machine still there: ask (again)
    END_BILLING = "end_billing"  # STOPPING and its machine is being deleted: billing stops
    RESUME_BILLING = "resume_billing"  # a termination the cloud accepted did not happen
    REPORT_STUCK = "report_stuck"  # STOPPING past its limit: alarm once, keep trying
    FAIL_STUCK = "fail_stuck"  # PROVISIONING/CONFIGURING past its limit: release, ERROR


@dataclass(frozen=True)
class Decision:
    instance: Instance
    action: Action
    # The record's machine as the cloud reported it (None: no machine found).
    machine: CloudMachine | None = None
    # FINISH and END_BILLING: when billing ends.
    at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Orphan:
    """A machine of this deployment that no live record owns, old enough to be terminated."""

    provider: str
    region: str
    machine: CloudMachine
    age: timedelta


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    # Managed machines nobody owns that are still within their grace period.
    young_unowned: int = 0

    def of(self, action: Action) -> list[Decision]:
        return [d for d in self.decisions if d.action is action]


def machine_of(instance: Instance, snapshot: CloudSnapshot) -> CloudMachine | None:
    """The record's machine: by its stored id, or, while none is stored (a launch whose id was
    never written), the managed machine tagged with the record id."""
    if instance.cloud_resource_id is not None:
        return snapshot.state_of(instance.cloud_resource_id)
    return next(
        (
            m
            for m in (*snapshot.managed, *snapshot.by_id.values())
            if m.record_id == instance.id and m.state.is_present
        ),
        None,
    )


def decide(
    instance: Instance,
    snapshot: CloudSnapshot | None,
    now: datetime,
    policy: LifecyclePolicy,
) -> Decision | None:
    """The one thing to do about a live record now, or None. `snapshot` is None when the
    cloud could not be read: nothing is decided from the cloud then (no machine is called
    gone), but idle and stuck records are still acted on."""
    status = instance.status
    machine = machine_of(instance, snapshot) if snapshot is not None else None
    if snapshot is not None and _is_gone(instance, machine, now, policy):
        return _finish(instance, machine, now)
    if status is InstanceStatus.STOPPING:
        return _stopping(instance, machine, now, policy)
    if (
        status in IN_SERVICE_STATUSES
        and machine is not None
        and machine.state is CloudState.STOPPED
    ):
        # Powered off behind the service's back (a console stop, an OS shutdown on Azure, the
        # agent's dead-man switch without an identity): it serves no one, and a stopped but
        # allocated Azure VM is still billed. Stop it; billing ends when the cloud says it
        # stopped billing it, else when it takes the terminate.
        return Decision(
            instance, Action.STOP, machine, at=machine.unbilled_since,
            reason=POWERED_OFF_OUTSIDE_SERVICE,
        )
    stop = instance.next_stop()
    assert stop is not None  # every live status but STOPPING has one
    stop_at, why = stop
    if stop_at <= now:
        return Decision(instance, Action.STOP, machine, at=stop_at, reason=why)
    if instance.is_stuck(now, policy):
        return Decision(
            instance, Action.FAIL_STUCK, machine, reason=f"stuck_in_{status.lower()}"
        )
    if stop_at - now <= EXPIRY_WARNING and instance.expiry_warned_for != stop_at:
        return Decision(instance, Action.WARN_EXPIRY, machine, at=stop_at, reason=why)
    return None


def _is_gone(
    instance: Instance, machine: CloudMachine | None, now: datetime, policy: LifecyclePolicy
) -> bool:
    if machine is not None:
        # The cloud says so in as many words; otherwise the machine is there.
        return machine.state is CloudState.TERMINATED
    if instance.cloud_resource_id is None:
        # No machine was ever recorded and none carries the record's tag: only a stop can
        # finish such a record (a launch still in flight finds the record stopped and
        # releases its machine; the orphan sweep is the net under that).
        return instance.status is InstanceStatus.STOPPING
    if instance.status is InstanceStatus.STOPPING and instance.terminate_requested_at:
        return True  # not listed after the cloud took its terminate: gone
    # Not listed at all. A machine launched moments ago may not be listed yet (EC2's reads
    # are eventually consistent), so only an older one counts as gone.
    return not instance.is_young(now, policy)


def _finish(instance: Instance, machine: CloudMachine | None, now: datetime) -> Decision:
    if instance.billing_ended_at is not None:
        ended = instance.billing_ended_at  # the cloud began the deletion then
    elif machine is not None and machine.gone_at is not None:
        ended = min(machine.gone_at, now)
    else:
        ended = now  # the first look that found it gone
    reason = instance.status_reason if instance.status is InstanceStatus.STOPPING else None
    return Decision(
        instance, Action.FINISH, machine, at=ended, reason=reason or TERMINATED_OUTSIDE_SERVICE
    )


def _stopping(
    instance: Instance,
    machine: CloudMachine | None,
    now: datetime,
    policy: LifecyclePolicy,
) -> Decision | None:
    if machine is not None and not machine.state.is_present:
        if instance.billing_ended_at is None:
            return Decision(instance, Action.END_BILLING, machine, at=now)
        return None  # deletion under way and billed to its start: wait for it to finish
    unbilled = machine.unbilled_since if machine is not None else None
    if unbilled is not None and (
        instance.billing_ended_at is None or instance.billing_ended_at < unbilled
    ):
        # Stopped, and the cloud bills it no more since then: billing ends there (later
        # than a terminate it accepted and did not carry out, earlier than one to come).
        return Decision(instance, Action.END_BILLING, machine, at=min(unbilled, now))
    if (
        machine is not None
        and machine.unbilled_since is None  # stopped and not billed by the cloud: nothing to resume
        and instance.billing_ended_at is not None
        and _asked_long_ago(instance, now, policy)
    ):
        # The cloud accepted the termination but still runs the machine: it is billed on.
        return Decision(instance, Action.RESUME_BILLING, machine)
    if instance.terminate_due(now, policy):
        return Decision(instance, Action.SEND_TERMINATE, machine)
    if instance.is_stuck(now, policy) and instance.stuck_reported_at is None:
        return Decision(instance, Action.REPORT_STUCK, machine, reason="stuck_in_stopping")
    return None


def _asked_long_ago(instance: Instance, now: datetime, policy: LifecyclePolicy) -> bool:
    # Right after a terminate, a read may still show the machine running: give the cloud
    # the grace period to show the deletion before calling the stop failed.
    asked = instance.terminate_requested_at
    return asked is None or now - asked >= policy.orphan_grace


def plan(
    records: Iterable[Instance],
    snapshots: dict[tuple[str, str], CloudSnapshot | None],
    now: datetime,
    policy: LifecyclePolicy,
) -> Plan:
    """Decisions for every live record, and the orphans of every snapshot: machines of this
    deployment that no live record owns (no record, a finished one, or a record whose machine
    is another), older than the grace period, still present."""
    result = Plan()
    owned: set[tuple[str, str, str]] = set()  # (provider, region, resource id)
    for instance in records:
        where = (instance.provider, instance.region)
        snapshot = snapshots.get(where)
        decision = decide(instance, snapshot, now, policy)
        if decision is not None:
            result.decisions.append(decision)
        machine = machine_of(instance, snapshot) if snapshot is not None else None
        if machine is not None:
            owned.add((*where, machine.resource_id))
    for (provider, region), snapshot in snapshots.items():
        if snapshot is None:
            continue
        for machine in snapshot.managed:
            if not machine.state.is_present or (provider, region, machine.resource_id) in owned:
                continue
            age = now - machine.launched_at if machine.launched_at is not None else None
            if age is None or age < policy.orphan_grace:
                result.young_unowned += 1
                continue
            result.orphans.append(Orphan(provider, region, machine, age))
    return result


BUDGET_EXHAUSTED = "budget_exhausted"
# Decisions a budget stop does not override: the machine is gone, stuck, or already stopping.
_KEPT_OVER_BUDGET_STOP = frozenset({
    Action.STOP, Action.FINISH, Action.FAIL_STUCK, Action.SEND_TERMINATE, Action.END_BILLING,
    Action.REPORT_STUCK, Action.RESUME_BILLING,
})  # fmt: skip


def with_budget_stops(
    decided: Plan,
    over_budget: Iterable[Instance],
    snapshots: dict[tuple[str, str], CloudSnapshot | None],
) -> Plan:
    """The plan with a stop (reason `budget_exhausted`) for each live instance of a user whose
    spent budget's action is `stop`, unless the plan already finishes, fails or stops it."""
    stopping = {i.id: i for i in over_budget if i.status is not InstanceStatus.STOPPING}
    decisions = []
    for decision in decided.decisions:
        if decision.instance.id in stopping:
            if decision.action not in _KEPT_OVER_BUDGET_STOP:
                continue  # a warning, replaced by the stop below
            del stopping[decision.instance.id]
        decisions.append(decision)
    for instance in stopping.values():
        snapshot = snapshots.get((instance.provider, instance.region))
        machine = machine_of(instance, snapshot) if snapshot is not None else None
        decisions.append(Decision(instance, Action.STOP, machine, reason=BUDGET_EXHAUSTED))
    return Plan(decisions, decided.orphans, decided.young_unowned)
