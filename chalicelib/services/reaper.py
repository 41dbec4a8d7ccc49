"""The scheduled tick: one look at each cloud, diffed against the live records, and whatever
that calls for (stop idle instances, finish those whose machine is gone, send terminates that
are owed, terminate orphans, flag stuck records), in batches."""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from chalicelib.domain.cloud import CloudSnapshot
from chalicelib.domain.instance import Instance, LifecyclePolicy
from chalicelib.domain.reconcile import plan, with_budget_stops
from chalicelib.domain.states import LIVE_STATUSES, InstanceStatus
from chalicelib.services.lifecycle import Lifecycle
from chalicelib.services.ports import Leases
from chalicelib.services.quotas import QuotaService
from chalicelib.services.reconciler import Outcome, Reconciler

logger = logging.getLogger(__name__)

LEASE_NAME = "reaper-tick"
# Longer than the reaper's Lambda timeout (120 s): a tick that dies holding the lease blocks
# the next one at most this long.
LEASE_DURATION = timedelta(seconds=150)


@dataclass
class TickReport:
    outcome: Outcome = field(default_factory=Outcome)
    skipped: bool = False  # another tick held the lease
    failures: Counter[str] = field(default_factory=Counter)
    # What the tick found live (the figures it publishes as metrics).
    live_by_status: Counter[str] = field(default_factory=Counter)
    burn_rate_usd_per_hour: Decimal = Decimal("0")
    stuck_stopping: int = 0
    young_unowned: int = 0
    # Finished instances whose quota usage was still held (a failed release), given back.
    usage_repaired: list[str] = field(default_factory=list)

    @property
    def changed_anything(self) -> bool:
        return self.outcome.changed_anything

    def as_dict(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "skipped": self.skipped,
            "terminatedIdle": o.stopped.get("idle_timeout", []),
            "stoppedMaxLifetime": o.stopped.get("max_lifetime", []),
            "stoppedBudgetExhausted": o.stopped.get("budget_exhausted", []),
            "stoppedPoweredOff": o.stopped.get("powered_off_outside_service", []),
            "warnedExpiring": o.warned_expiring,
            "terminateSent": o.terminate_sent,
            "confirmedTerminated": [i for i in o.finished if i not in o.finished_outside_service],
            "terminatedOutsideService": o.finished_outside_service,
            "billingResumed": o.billing_resumed,
            "markedStuck": o.failed_stuck + o.reported_stuck,
            "orphansTerminated": o.orphans_terminated,
            "usageRepaired": self.usage_repaired,
            "failures": dict(self.failures + o.failures),
            "liveByStatus": dict(self.live_by_status),
            "burnRateUsdPerHour": str(self.burn_rate_usd_per_hour),
        }


class Reaper:
    def __init__(
        self, lifecycle: Lifecycle, policy: LifecyclePolicy, leases: Leases,
        quotas: QuotaService | None = None,
    ) -> None:
        self.quotas = quotas
        self.lifecycle = lifecycle
        self.repository = lifecycle.repository
        self.providers = lifecycle.providers
        self.policy = policy
        self.leases = leases
        self.reconciler = Reconciler(lifecycle, policy)

    def tick(self, now: datetime) -> TickReport:
        report = TickReport()
        holder = uuid.uuid4().hex
        if not self.leases.acquire(LEASE_NAME, holder, now, LEASE_DURATION):
            logger.info("another reaper tick holds the lease; this one does nothing")
            report.skipped = True
            return report
        try:
            records = self._live_records(report)
            snapshots = self._snapshots(records, now, report)
            decided = plan(records, snapshots, now, self.policy)
            if self.quotas is not None:
                over_budget, warnings = self.quotas.budget_check(records, now)
                decided = with_budget_stops(
                    decided, [i for user in over_budget.values() for i in user], snapshots
                )
                self.lifecycle.publish(warnings)
            report.young_unowned = decided.young_unowned
            report.outcome = self.reconciler.apply(decided, now)
            self._repair_usage(records, report)
            self._measure(records, now, report)
        finally:
            try:
                self.leases.release(LEASE_NAME, holder)
            except Exception:
                logger.exception("could not release the reaper's lease; it expires by itself")
        return report

    def _repair_usage(self, records: list[Instance], report: TickReport) -> None:
        if self.quotas is None:
            return
        try:
            report.usage_repaired = self.quotas.repair_usage([r.id for r in records])
        except Exception:
            logger.exception("reaper could not check the quota usage")
            report.failures["usage-repair"] += 1

    def _live_records(self, report: TickReport) -> list[Instance]:
        records: list[Instance] = []
        for status in LIVE_STATUSES:
            try:
                records.extend(self.repository.live(status))
            except Exception:
                # An unreadable status costs its records this tick, not the whole tick.
                logger.exception("reaper could not read the %s instances", status)
                report.failures[f"read-{status.lower()}"] += 1
        return records

    def _snapshots(
        self, records: list[Instance], now: datetime, report: TickReport
    ) -> dict[tuple[str, str], CloudSnapshot | None]:
        """One look per provider and region: the configured ones, and any a live record is
        in. A provider that cannot be read maps to None (nothing is judged gone there). The
        power state of a machine whose agent went silent is asked for too (powered off?)."""
        wanted: dict[tuple[str, str], set[str]] = {
            (name, self.providers.region_for(name)): set() for name in self.providers.available()
        }
        silent: dict[tuple[str, str], set[str]] = defaultdict(set)
        for record in records:
            where = (record.provider, record.region)
            ids = wanted.setdefault(where, set())
            if record.cloud_resource_id is not None:
                ids.add(record.cloud_resource_id)
                if record.agent_is_silent(now, self.policy):
                    silent[where].add(record.cloud_resource_id)
        snapshots: dict[tuple[str, str], CloudSnapshot | None] = {}
        for (provider_name, region), ids in wanted.items():
            try:
                provider = self.providers.get(provider_name)
                snapshots[(provider_name, region)] = provider.snapshot(
                    region, sorted(ids), power_wanted=sorted(silent[(provider_name, region)])
                )
            except Exception:
                logger.exception("reaper could not list the machines of %s %s", provider_name,
                                 region)
                report.failures[f"list-{provider_name}"] += 1
                snapshots[(provider_name, region)] = None
        return snapshots

    def _measure(self, records: list[Instance], now: datetime, report: TickReport) -> None:
        for record in records:
            report.live_by_status[record.status.value] += 1
            if record.is_billing:
                report.burn_rate_usd_per_hour += record.hourly_usd
            if record.status is InstanceStatus.STOPPING and record.is_stuck(now, self.policy):
                report.stuck_stopping += 1
