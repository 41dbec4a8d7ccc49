"""Per-user quotas and monthly budgets: the limits, the usage held against them, and the
pure rules that say whether a new instance fits and how far a budget is spent."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from decimal import Decimal

BUDGET_ACTIONS = ("warn", "refuse", "stop")
# The share of the monthly budget at which the Budget Warning event goes out (once a month).
BUDGET_WARNING_SHARE = Decimal("0.8")
LIMIT_NAMES = {
    "max_live_instances": "maxLiveInstances",
    "max_live_gpus": "maxLiveGpus",
    "max_burn_rate": "maxBurnRateUsdPerHour",
    "monthly_budget": "monthlyBudgetUsd",
    "budget_action": "budgetAction",
}


@dataclass(frozen=True)
class Limits:
    """None: no limit. Money is in US dollars."""

    max_live_instances: int | None = None
    max_live_gpus: int | None = None
    max_burn_rate: Decimal | None = None  # the sum of the hourly rates of the live instances
    monthly_budget: Decimal | None = None  # UTC calendar month
    budget_action: str = "warn"

    def overridden_by(self, overrides: dict[str, object]) -> Limits:
        """These limits with a user's own values (by field name) in place of the defaults."""
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if k in known})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Usage:
    """What a user's live instances hold: counted when an instance is provisioned, released
    when it finishes."""

    live_instances: int = 0
    live_gpus: int = 0
    burn_rate: Decimal = Decimal("0")

    def plus(self, gpus: int, hourly_usd: Decimal) -> Usage:
        return Usage(self.live_instances + 1, self.live_gpus + gpus, self.burn_rate + hourly_usd)


@dataclass(frozen=True)
class Exceeded:
    """The limit a new instance would pass: its API name, its value, the usage before."""

    limit: str
    value: str
    usage: str


def first_exceeded(
    limits: Limits, usage: Usage, gpus: int, hourly_usd: Decimal
) -> Exceeded | None:
    """The first limit that an instance of `gpus` GPUs at `hourly_usd` would pass, or None."""
    after = usage.plus(gpus, hourly_usd)
    if limits.max_live_instances is not None and after.live_instances > limits.max_live_instances:
        return Exceeded("maxLiveInstances", str(limits.max_live_instances),
                        str(usage.live_instances))
    if limits.max_live_gpus is not None and after.live_gpus > limits.max_live_gpus:
        return Exceeded("maxLiveGpus", str(limits.max_live_gpus), str(usage.live_gpus))
    if limits.max_burn_rate is not None and after.burn_rate > limits.max_burn_rate:
        return Exceeded("maxBurnRateUsdPerHour", str(limits.max_burn_rate), str(usage.burn_rate))
    return None


def budget_spent_share(limits: Limits, spent: Decimal) -> Decimal | None:
    """How much of the monthly budget is spent (1 = all of it); None without a budget."""
    if limits.monthly_budget is None:
        return None
    if limits.monthly_budget <= 0:
        return Decimal("1") if spent >= 0 else Decimal("0")
    return spent / limits.monthly_budget


def budget_warning_due(limits: Limits, spent: Decimal) -> bool:
    share = budget_spent_share(limits, spent)
    return share is not None and share >= BUDGET_WARNING_SHARE


def budget_exhausted(limits: Limits, spent: Decimal) -> bool:
    share = budget_spent_share(limits, spent)
    return share is not None and share >= 1


def refuses_provisions(limits: Limits, spent: Decimal) -> bool:
    """A spent budget refuses new instances unless its action is only to warn."""
    return limits.budget_action in ("refuse", "stop") and budget_exhausted(limits, spent)


def stops_instances(limits: Limits, spent: Decimal) -> bool:
    return limits.budget_action == "stop" and budget_exhausted(limits, spent)
