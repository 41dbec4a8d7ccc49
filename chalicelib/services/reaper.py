"""The scheduled tick: accrue cost, stop idle instances, confirm stops, flag stuck ones."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from chalicelib.domain.instance import Instance, LifecyclePolicy
from chalicelib.domain.states import IN_SERVICE_STATUSES, LIVE_STATUSES, InstanceStatus
from chalicelib.services.lifecycle import Lifecycle

logger = logging.getLogger(__name__)

IDLE_TIMEOUT_REASON = "idle_timeout"


@dataclass
class TickReport:
    accrued: int = 0
    terminated_idle: list[str] = field(default_factory=list)
    confirmed_terminated: list[str] = field(default_factory=list)
    marked_stuck: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    # What the tick found live as it started (the figures it publishes as metrics).
    live_by_status: Counter[str] = field(default_factory=Counter)
    burn_rate_usd_per_hour: Decimal = Decimal("0")

    def as_dict(self) -> dict:
        return {
            "accrued": self.accrued,
            "terminatedIdle": self.terminated_idle,
            "confirmedTerminated": self.confirmed_terminated,
            "markedStuck": self.marked_stuck,
            "failures": dict(self.failures),
            "liveByStatus": dict(self.live_by_status),
            "burnRateUsdPerHour": str(self.burn_rate_usd_per_hour),
        }


class Reaper:
    def __init__(self, lifecycle: Lifecycle, policy: LifecyclePolicy) -> None:
        self.lifecycle = lifecycle
        self.repository = lifecycle.repository
        self.policy = policy

    def tick(self, now: datetime) -> TickReport:
        report = TickReport()
        for status in LIVE_STATUSES:
            for instance in self._read(report, "accrue", self.repository.live, status):
                report.live_by_status[status.value] += 1
                if instance.is_billing:
                    report.burn_rate_usd_per_hour += instance.hourly_usd
                self._guarded(report, "accrue", instance, lambda i: self._accrue(i, now, report))
        for status in IN_SERVICE_STATUSES:
            for instance in self._read(report, "idle", self.repository.due, status, now):
                self._guarded(report, "idle", instance, lambda i: self._stop_idle(i, now, report))
        for status in (InstanceStatus.PROVISIONING, InstanceStatus.CONFIGURING):
            for instance in self._read(report, "stuck", self.repository.due, status, now):
                self._guarded(report, "stuck", instance, lambda i: self._flag_stuck(i, report))
        stopping = InstanceStatus.STOPPING
        for instance in self._read(report, "confirm", self.repository.live, stopping):
            self._guarded(
                report, "confirm", instance, lambda i: self._confirm_stop(i, now, report)
            )
        return report

    def _accrue(self, instance: Instance, now: datetime, report: TickReport) -> None:
        self.repository.save(instance.with_cost_accrued(now), expected_status=instance.status)
        report.accrued += 1

    def _stop_idle(self, instance: Instance, now: datetime, report: TickReport) -> None:
        fresh = self.repository.get(instance.id)  # accrual bumped its version
        if fresh is None or fresh.status not in IN_SERVICE_STATUSES:
            return
        if fresh.idle_deadline() > now:
            return  # a heartbeat arrived after the index was read: not idle after all
        self.lifecycle.begin_termination(fresh, IDLE_TIMEOUT_REASON)
        report.terminated_idle.append(fresh.id)

    def _flag_stuck(self, instance: Instance, report: TickReport) -> None:
        fresh = self.repository.get(instance.id)
        if fresh is None or fresh.status is not instance.status:
            return
        self.lifecycle.fail(fresh, f"stuck_in_{fresh.status.lower()}")
        report.marked_stuck.append(fresh.id)

    def _confirm_stop(self, instance: Instance, now: datetime, report: TickReport) -> None:
        fresh = self.repository.get(instance.id)
        if fresh is None or fresh.status is not InstanceStatus.STOPPING:
            return
        confirmed = self.lifecycle.confirm_termination(fresh)
        if confirmed.status is InstanceStatus.TERMINATED:
            report.confirmed_terminated.append(confirmed.id)
        elif confirmed.is_stuck(now, self.policy):
            self.lifecycle.fail(confirmed, "stuck_in_stopping")
            report.marked_stuck.append(confirmed.id)

    @staticmethod
    def _read(
        report: TickReport, what: str, query: Callable[..., Iterable[Instance]], *args: Any
    ) -> list[Instance]:
        # An unreadable item or a failed query costs this pass, not the whole tick.
        try:
            return list(query(*args))
        except Exception:
            logger.exception("reaper could not read the instances to %s", what)
            report.failures[f"read-{what}"] += 1
            return []

    @staticmethod
    def _guarded(report: TickReport, what: str, instance: Instance, action) -> None:
        # One bad record (a race, a cloud error) must not stop the tick for the others;
        # it is logged and counted, and the next tick tries again.
        try:
            action(instance)
        except Exception:
            logger.exception("reaper could not %s instance %s", what, instance.id)
            report.failures[what] += 1
