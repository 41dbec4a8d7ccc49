"""Quotas and budgets per user: the limits an operator sets, the usage held against them,
the check a new instance passes before anything is created, the release when an instance
finishes, and the reaper's monthly budget check (warn at 80%, refuse or stop at 100%)."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from chalicelib.domain.errors import BudgetExhaustedError, ForbiddenError, QuotaExceededError
from chalicelib.domain.events import BUDGET_WARNING, Event
from chalicelib.domain.identity import Caller
from chalicelib.domain.instance import Instance
from chalicelib.domain.limits import (
    Limits,
    Usage,
    budget_spent_share,
    budget_warning_due,
    first_exceeded,
    refuses_provisions,
    stops_instances,
)
from chalicelib.domain.states import InstanceStatus
from chalicelib.domain.stats import FinishedShare, FinishedTotals
from chalicelib.persistence.repository import InstanceRepository, ListQuery, Page
from chalicelib.services.costs import month_start, month_to_date_spend
from chalicelib.services.ports import Clock
from chalicelib.services.views import BudgetWarning

logger = logging.getLogger(__name__)
RESERVE_ATTEMPTS = 3


class UsageStore(Protocol):
    def overrides(self, user_id: str) -> dict[str, Any]: ...
    def set_overrides(self, user_id: str, overrides: dict[str, Any]) -> None: ...
    def usage(self, user_id: str) -> tuple[Usage, frozenset[str]]: ...
    def reserve(
        self, user_id: str, instance_id: str, gpus: int, hourly_usd: Decimal, limits: Limits
    ) -> bool: ...
    def release(self, finished: FinishedShare) -> bool: ...
    def rebill(self, before: FinishedShare, after: FinishedShare) -> bool: ...
    def finished_totals(self, user_id: str | None) -> FinishedTotals: ...
    def aggregates(self, user_id: str | None) -> tuple[FinishedTotals, frozenset[str]]: ...
    def mark_warned(self, user_id: str, month: str, now: datetime) -> bool: ...


@dataclass(frozen=True)
class LimitsReport:
    user_id: str
    limits: Limits
    defaulted: frozenset[str]  # field names that come from the deployment's defaults
    usage: Usage
    month: str
    month_to_date: Decimal


class QuotaService:
    def __init__(
        self,
        store: UsageStore,
        repository: InstanceRepository,
        clock: Clock,
        defaults: Limits,
    ) -> None:
        self.store = store
        self.repository = repository
        self.clock = clock
        self.defaults = defaults

    def limits_of(self, user_id: str) -> tuple[Limits, frozenset[str]]:
        overrides = self.store.overrides(user_id)
        defaulted = frozenset(
            name for name in ("max_live_instances", "max_live_gpus", "max_burn_rate",
                              "monthly_budget", "budget_action")
            if name not in overrides
        )
        return self.defaults.overridden_by(overrides), defaulted

    # -- the API --------------------------------------------------------------------

    def report(self, caller: Caller, user_id: str) -> LimitsReport:
        if not caller.may_see(user_id):
            raise ForbiddenError("Only the user and operators may read a user's limits.")
        limits, defaulted = self.limits_of(user_id)
        usage, _ = self.store.usage(user_id)
        now = self.clock()
        return LimitsReport(
            user_id, limits, defaulted, usage, month_start(now).strftime("%Y-%m"),
            month_to_date_spend(self.repository, user_id, now),
        )

    def set_limits(self, caller: Caller, user_id: str, overrides: dict[str, Any]) -> LimitsReport:
        """Replace the user's own limits: the fields given (None: no limit), the others
        back to the defaults."""
        if not caller.is_admin:
            raise ForbiddenError("Only operators may set a user's limits.")
        self.store.set_overrides(user_id, overrides)
        return self.report(caller, user_id)

    # -- provisioning ---------------------------------------------------------------

    def reserve(self, instance: Instance) -> None:
        """Hold the new instance against its user's limits, or raise (nothing held). The
        sums are checked by the store in the same conditional write that adds to them."""
        limits, _ = self.limits_of(instance.user_id)
        if limits.monthly_budget is not None and limits.budget_action != "warn":
            spent = month_to_date_spend(self.repository, instance.user_id, self.clock())
            if refuses_provisions(limits, spent):
                raise BudgetExhaustedError(
                    f"The monthly budget of {limits.monthly_budget} USD is spent "
                    f"({spent} USD this month); no new instance until next month or a "
                    "higher budget.",
                    "monthlyBudgetUsd", str(limits.monthly_budget), str(spent),
                )
        for _ in range(RESERVE_ATTEMPTS):
            # A request that alone passes a limit is refused without a write.
            passed = first_exceeded(limits, Usage(), instance.gpu_count, instance.hourly_usd)
            if passed is None and self.store.reserve(
                instance.user_id, instance.id, instance.gpu_count, instance.hourly_usd, limits
            ):
                return
            usage, _ = self.store.usage(instance.user_id)
            passed = first_exceeded(limits, usage, instance.gpu_count, instance.hourly_usd)
            if passed is not None:
                raise QuotaExceededError(
                    f"A new {instance.instance_type} would pass {passed.limit} "
                    f"({passed.value}): {passed.usage} in use.",
                    passed.limit, passed.value, passed.usage,
                )
            # The usage fell (an instance finished) between the write and the read: again.
        raise QuotaExceededError(
            "The user's usage changed too often to be checked; try again.",
            "maxLiveInstances", str(limits.max_live_instances), "changing",
        )

    def release(self, instance: Instance) -> bool:
        """The instance finished (or was never stored): its usage is given back, and it is
        added to its user's finished totals, once. False if it held no usage (any more)."""
        return self.store.release(FinishedShare.of(instance))

    def rebill(self, before: Instance, after: Instance) -> None:
        """A finished record billed again: counted with its new bill if it still holds usage
        (its release failed, or is being made right now), else by the difference."""
        if not self.release(after):
            self.store.rebill(FinishedShare.of(before), FinishedShare.of(after))

    def repair_usage(self, live_ids: Collection[str]) -> list[str]:
        """Give back the usage still held for finished instances (a release that failed when
        the record was finished, logged then): one Query of the usage items, then one read of
        the holders that are not among `live_ids`. Returns the ids released now."""
        _, holders = self.store.aggregates(None)
        suspects = holders - frozenset(live_ids)
        if not suspects:
            return []
        repaired = []
        # A holder not yet stored, or stored live since `live_ids` was read, is left alone.
        for record in self.repository.get_many(suspects):
            if record.status.is_terminal and self.release(record):
                logger.warning("gave back the quota usage still held by finished %s", record.id)
                repaired.append(record.id)
        return sorted(repaired)

    # -- the reaper's budget check --------------------------------------------------

    def budget_check(
        self, records: list[Instance], now: datetime
    ) -> tuple[dict[str, list[Instance]], list[Event]]:
        """For each user with live instances: the Budget Warning at 80% of the month's
        budget (once a month), and the instances to stop where the budget is spent and its
        action is `stop`."""
        by_user: dict[str, list[Instance]] = {}
        for record in records:
            by_user.setdefault(record.user_id, []).append(record)
        to_stop: dict[str, list[Instance]] = {}
        events: list[Event] = []
        month = month_start(now).strftime("%Y-%m")
        for user_id, live in sorted(by_user.items()):
            try:
                limits, _ = self.limits_of(user_id)
                if limits.monthly_budget is None:
                    continue
                spent = month_to_date_spend(self.repository, user_id, now)
                if budget_warning_due(limits, spent) and self.store.mark_warned(
                    user_id, month, now
                ):
                    share = budget_spent_share(limits, spent) or Decimal("0")
                    warning = BudgetWarning(
                        userId=user_id, month=month,
                        monthlyBudgetUsd=str(limits.monthly_budget), spentUsd=str(spent),
                        spentPercent=str((share * 100).quantize(Decimal("0.1"))),
                        budgetAction=limits.budget_action,
                    )
                    events.append(Event(BUDGET_WARNING, warning.model_dump(mode="json")))
                if stops_instances(limits, spent):
                    to_stop[user_id] = [
                        r for r in live if r.status is not InstanceStatus.STOPPING
                    ]
            except Exception:
                logger.exception("could not check the budget of user %s", user_id)
        return to_stop, events


class UsageReleasingRepository:
    """The instance repository, releasing an instance's quota usage when a write finishes
    it, whichever path finished it (a stop, the cloud reporting it gone, an error)."""

    def __init__(self, inner: InstanceRepository, quotas: QuotaService) -> None:
        self.inner = inner
        self.quotas = quotas

    def save(self, instance: Instance, expected_status: InstanceStatus) -> Instance:
        # A finished record written again is billed again (a machine of it found later): the
        # finished totals take the new bill, so they stay the sum of the records. This write
        # and the first release are each conditional on the usage still held: whichever comes
        # second finds the other's count and adds only what it lacks.
        before = self.inner.get(instance.id) if expected_status.is_terminal else None
        stored: Instance = self.inner.save(instance, expected_status)
        if stored.status.is_terminal and expected_status.is_live:
            try:
                self.quotas.release(stored)
            except Exception:
                # The transition is stored; the reaper's next tick gives the usage back
                # (QuotaService.repair_usage).
                logger.exception("could not release the usage of %s", stored.id)
        elif before is not None:
            try:
                self.quotas.rebill(before, stored)
            except Exception:
                logger.exception("could not add the new bill of %s to the totals", stored.id)
        return stored

    def add(self, instance: Instance) -> Instance:
        stored: Instance = self.inner.add(instance)
        return stored

    def get(self, instance_id: str) -> Instance | None:
        found: Instance | None = self.inner.get(instance_id)
        return found

    def list(self, query: ListQuery) -> Page:
        page: Page = self.inner.list(query)
        return page

    def live(self, status: InstanceStatus) -> Iterable[Instance]:
        return self.inner.live(status)

    def due(self, status: InstanceStatus, now: datetime) -> Iterator[Instance]:
        due: Iterator[Instance] = self.inner.due(status, now)
        return due

    def all_for_stats(self, user_id: str | None) -> Iterator[Instance]:
        found: Iterator[Instance] = self.inner.all_for_stats(user_id)
        return found

    def billed_between(
        self, start: datetime, end: datetime, user_id: str | None
    ) -> Iterator[Instance]:
        found: Iterator[Instance] = self.inner.billed_between(start, end, user_id)
        return found

    def get_many(self, instance_ids: frozenset[str]) -> builtins.list[Instance]:
        found: builtins.list[Instance] = self.inner.get_many(instance_ids)
        return found
