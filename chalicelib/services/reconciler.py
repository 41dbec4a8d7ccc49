"""Carries out a reconciliation plan: conditional writes for the records that change, cloud
terminates in batches, events in batches. Used by the reaper's tick for the whole fleet and
by the release workflow for one instance, so a stop takes the same path wherever it starts."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime

from chalicelib import logs
from chalicelib.domain.cloud import CloudState
from chalicelib.domain.errors import ConcurrentUpdateError
from chalicelib.domain.events import (
    INSTANCE_EXPIRING,
    INSTANCE_STUCK,
    ORPHAN_TERMINATED,
    Event,
)
from chalicelib.domain.instance import Instance, LifecyclePolicy
from chalicelib.domain.reconcile import Action, Decision, Orphan, Plan
from chalicelib.domain.states import InstanceStatus
from chalicelib.providers.base import CloudProviderError
from chalicelib.services.lifecycle import Lifecycle
from chalicelib.services.views import (
    ExpiringInstance,
    Expiry,
    OrphanTerminated,
    instance_view,
    iso,
    record_as,
)

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What applying a plan changed, by record id (and cloud id for orphans)."""

    # Records moved to STOPPING, by reason (idle_timeout, max_lifetime, budget_exhausted,
    # powered_off_outside_service).
    stopped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    warned_expiring: list[str] = field(default_factory=list)
    terminate_sent: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    finished_outside_service: list[str] = field(default_factory=list)
    billing_resumed: list[str] = field(default_factory=list)
    reported_stuck: list[str] = field(default_factory=list)
    failed_stuck: list[str] = field(default_factory=list)
    orphans_terminated: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    # Writes that lost to another writer (not failures: the fresh state is decided next time).
    races: int = 0

    @property
    def changed_anything(self) -> bool:
        return any(
            (any(self.stopped.values()), self.warned_expiring, self.terminate_sent,
             self.finished, self.billing_resumed, self.reported_stuck, self.failed_stuck,
             self.orphans_terminated)
        )  # fmt: skip


class Reconciler:
    def __init__(self, lifecycle: Lifecycle, policy: LifecyclePolicy) -> None:
        self.lifecycle = lifecycle
        self.repository = lifecycle.repository
        self.providers = lifecycle.providers
        self.policy = policy

    def apply(self, plan: Plan, now: datetime) -> Outcome:
        outcome = Outcome()
        events: list[Event] = []
        to_terminate: list[Instance] = []
        for decision in plan.decisions:
            try:
                claimed = self._act(decision, now, outcome, events)
            except ConcurrentUpdateError:
                # Someone changed the record since it was read (a heartbeat, a DELETE, an
                # overlapping tick): its fresh state is decided on next time.
                outcome.races += 1
                continue
            except Exception:
                logger.exception(
                    "could not %s instance %s", decision.action.value, decision.instance.id
                )
                outcome.failures[decision.action.value] += 1
                continue
            if claimed is not None:
                to_terminate.append(claimed)
        self._terminate(to_terminate, now, outcome, events)
        self._terminate_orphans(plan.orphans, now, outcome, events)
        self.lifecycle.publish(events)
        return outcome

    # -- one record ---------------------------------------------------------------------

    def _act(
        self, decision: Decision, now: datetime, outcome: Outcome, events: list[Event]
    ) -> Instance | None:
        """Makes the decision's write; returns the record when a terminate is now owed to its
        machine (the write that claimed it won, so no other writer sends it too)."""
        instance, action = decision.instance, decision.action
        if decision.machine is not None and instance.cloud_resource_id is None:
            # The machine found by its tag: the record learns its id and launch time.
            instance = instance.with_cloud_launch(
                decision.machine.resource_id, decision.machine.launched_at
            )
        if action is Action.STOP:
            claimed = instance.with_terminate_requested(now)
            unbilled = decision.machine.unbilled_since if decision.machine else None
            if unbilled is not None:  # the cloud stopped billing the machine then
                claimed = claimed.with_billing_ended(min(unbilled, now))
            stopping = self.lifecycle.move(
                claimed, InstanceStatus.STOPPING, decision.reason, deferred=events
            )
            outcome.stopped[decision.reason or "stop"].append(instance.id)
            return stopping if stopping.cloud_resource_id else None
        if action is Action.WARN_EXPIRY:
            self._save(replace(instance, expiry_warned_for=decision.at), instance, now)
            outcome.warned_expiring.append(instance.id)
            logs.action(
                "warned of its stop", instance.id, f"{decision.reason} at {iso(decision.at)}"
            )
            expiring = record_as(
                ExpiringInstance, instance, now,
                expiring=Expiry(reason=decision.reason, at=iso(decision.at)),
            )
            events.append(Event(INSTANCE_EXPIRING, expiring.model_dump(mode="json")))
            return None
        if action is Action.FINISH:
            ended = instance.with_billing_ended(decision.at or now)
            self.lifecycle.move(
                ended, InstanceStatus.TERMINATED, decision.reason, deferred=events,
                billing_ended_at=ended.billing_ended_at,
            )
            outcome.finished.append(instance.id)
            if instance.status is not InstanceStatus.STOPPING:
                outcome.finished_outside_service.append(instance.id)
            return None
        if action is Action.END_BILLING:
            ended = instance.with_billing_ended(decision.at or now)
            self._save(ended, instance, now)
            logs.action("billing ended", instance.id, f"at {iso(ended.billing_ended_at)}")
            return None
        if action is Action.REPORT_STUCK:
            self._save(self._reported_stuck(instance, now, outcome, events), instance, now)
            return None
        if action is Action.FAIL_STUCK:
            self.lifecycle.fail(instance, decision.reason or "stuck")
            outcome.failed_stuck.append(instance.id)
            return None
        # SEND_TERMINATE and RESUME_BILLING: the machine is still there.
        changed = instance
        if action is Action.RESUME_BILLING:
            changed = changed.with_billing_resumed()
            outcome.billing_resumed.append(instance.id)
        owed = changed.cloud_resource_id is not None and changed.terminate_due(now, self.policy)
        if owed:
            changed = changed.with_terminate_requested(now)
        if changed.is_stuck(now, self.policy) and changed.stuck_reported_at is None:
            changed = self._reported_stuck(changed, now, outcome, events)
        if changed == decision.instance:
            return None
        stored = self._save(changed, decision.instance, now)
        if action is Action.RESUME_BILLING:
            logs.action("billing resumed", instance.id, "its machine is still there")
        return stored if owed else None

    def _reported_stuck(
        self, instance: Instance, now: datetime, outcome: Outcome, events: list[Event]
    ) -> Instance:
        logger.error(
            "instance %s has been STOPPING since %s and its machine %s is still there",
            instance.id, iso(instance.status_entered_at), instance.cloud_resource_id,
        )
        outcome.reported_stuck.append(instance.id)
        events.append(Event(INSTANCE_STUCK, instance_view(instance, now)))
        return replace(instance, stuck_reported_at=now)

    def _save(self, changed: Instance, read: Instance, now: datetime) -> Instance:
        return self.repository.save(
            replace(changed, updated_at=now), expected_status=read.status
        )

    # -- cloud calls in batches ---------------------------------------------------------

    def _terminate(
        self, instances: list[Instance], now: datetime, outcome: Outcome, events: list[Event]
    ) -> None:
        """One terminate call per batch of machines, then one look at those machines: the
        ones the cloud already reports gone are finished in the same pass."""
        groups: dict[tuple[str, str], list[Instance]] = defaultdict(list)
        for instance in instances:
            groups[(instance.provider, instance.region)].append(instance)
        for (provider_name, region), group in groups.items():
            provider = self.providers.get(provider_name)
            ids = [str(i.cloud_resource_id) for i in group]
            try:
                states = provider.terminate_many(ids, region)
            except CloudProviderError:
                # Claimed and not sent: the claim's backoff brings it round again.
                logger.exception("terminate of %d machine(s) on %s failed", len(ids), region)
                outcome.failures["terminate"] += len(ids)
                continue
            going: list[Instance] = []
            for instance in group:
                state = states.get(str(instance.cloud_resource_id))
                if state is None:  # refused on its own (the rest of the batch went)
                    outcome.failures["terminate"] += 1
                    continue
                outcome.terminate_sent.append(instance.id)
                logs.action("terminate sent", instance.id, f"machine {instance.cloud_resource_id}")
                if not state.is_present:
                    going.append(instance)
                # else not going yet: billed on until a look shows it going
            self._record_going(provider_name, region, going, now, outcome, events)

    def _record_going(
        self, provider_name: str, region: str, going: list[Instance], now: datetime,
        outcome: Outcome, events: list[Event],
    ) -> None:
        """Billing of machines the cloud began deleting ends now; one look at them finishes
        the records of those already gone in the same write."""
        if not going:
            return
        try:
            look = self.providers.get(provider_name).snapshot(
                region, [str(i.cloud_resource_id) for i in going], include_managed=False
            )
        except CloudProviderError:
            logger.exception("could not look at %d terminated machine(s)", len(going))
            look = None
        for instance in going:
            ended = instance.with_billing_ended(instance.billing_ended_at or now)
            machine = look.state_of(str(instance.cloud_resource_id)) if look else None
            try:
                if machine is not None and machine.state is CloudState.TERMINATED:
                    self.lifecycle.move(
                        ended, InstanceStatus.TERMINATED, instance.status_reason,
                        deferred=events, billing_ended_at=ended.billing_ended_at,
                    )
                    outcome.finished.append(instance.id)
                elif ended != instance:
                    self._save(ended, instance, now)
            except ConcurrentUpdateError:
                outcome.races += 1  # the next look decides on the fresh record

    def _terminate_orphans(
        self, orphans: list[Orphan], now: datetime, outcome: Outcome, events: list[Event]
    ) -> None:
        groups: dict[tuple[str, str], list[Orphan]] = defaultdict(list)
        for orphan in orphans:
            groups[(orphan.provider, orphan.region)].append(orphan)
        for (provider_name, region), group in groups.items():
            ids = [o.machine.resource_id for o in group]
            try:
                states = self.providers.get(provider_name).terminate_many(ids, region)
            except CloudProviderError:
                logger.exception("terminate of %d orphan(s) on %s failed", len(ids), region)
                outcome.failures["orphan"] += len(ids)
                continue
            for orphan in group:
                machine = orphan.machine
                if machine.resource_id not in states:
                    outcome.failures["orphan"] += 1
                    continue
                logger.warning(
                    "terminated orphan machine %s on %s %s (record %s, %d s old)",
                    machine.resource_id, provider_name, region, machine.record_id,
                    orphan.age.total_seconds(),
                )
                outcome.orphans_terminated.append(machine.resource_id)
                detail = OrphanTerminated(
                    provider=provider_name, region=region, cloudResourceId=machine.resource_id,
                    recordId=machine.record_id, launchedAt=iso(machine.launched_at),
                    ageSeconds=int(orphan.age.total_seconds()), terminatedAt=iso(now),
                )
                events.append(Event(ORPHAN_TERMINATED, detail.model_dump(mode="json")))
                self._bill_finished_record(orphan, now, outcome)

    def _bill_finished_record(self, orphan: Orphan, now: datetime, outcome: Outcome) -> None:
        """A finished record whose machine ran on (its release was lost) is billed for it:
        from the cloud's launch time to this terminate, so no released machine shows zero."""
        record_id = orphan.machine.record_id
        if record_id is None:
            return
        try:
            record = self.repository.get(record_id)
            if record is None or record.status.is_live:
                return
            if record.cloud_resource_id not in (None, orphan.machine.resource_id):
                return  # a second machine of a record that has its own bill
            machine = orphan.machine
            billed = record.with_cloud_launch(machine.resource_id, machine.launched_at)
            billed = replace(billed, billing_ended_at=None).with_billing_ended(now)
            self._save(billed.with_cost_accrued(now), record, now)
        except Exception:
            logger.exception("could not bill record %s for its orphan machine", record_id)
            outcome.failures["orphan-billing"] += 1
