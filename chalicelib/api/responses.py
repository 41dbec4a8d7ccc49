"""Response bodies, as pydantic models: the OpenAPI document's schemas come from here, and the
answers are built from them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from chalicelib.domain.states import InstanceStatus

# The instance record's models are shared with the lifecycle events: they live beside the one
# function that fills them (services/views.py).
from chalicelib.services.views import MONEY, Gpu, InstanceRecord, Money


class OfferCandidate(BaseModel):
    instanceType: str
    provider: str
    gpu: Gpu
    hourlyUsd: str = Money
    available: bool
    reason: str | None = None


class Offer(BaseModel):
    """Which type a requirement picked, at what price, among which alternatives."""

    chosen: OfferCandidate
    alternatives: list[OfferCandidate]


class ProvisionedInstance(InstanceRecord):
    offer: Offer | None = Field(
        default=None, description="Present when the type was chosen from a requirement"
    )
    warnings: list[str] = Field(
        description="What the caller should know about the launch, e.g. that the type is "
        "of a previous generation; empty when nothing"
    )


class InstancePage(BaseModel):
    items: list[InstanceRecord]
    nextCursor: str | None = Field(description="pass back as `cursor` for the next page")


class FleetStats(BaseModel):
    byStatus: dict[str, int]
    byProvider: dict[str, int]
    total: int
    live: int
    burnRateUsdPerHour: str = Money
    totalCostUsd: str = Money
    alwaysOnCostUsd: str = Money
    savingUsd: str = Money
    savingPercent: str | None
    periodStart: str | None
    computedAt: str


class CostGroup(BaseModel):
    key: str | None = Field(
        description="the user, task (null: no task), type, provider or UTC day (YYYY-MM-DD)"
    )
    costUsd: str = Money
    billedSeconds: int = Field(description="billed seconds inside the window")
    instances: int = Field(description="instances that billed inside the window")


class CostReport(BaseModel):
    """What was billed inside [from, to), under each provider's rule."""

    from_: str = Field(serialization_alias="from")
    to: str
    groupBy: str
    groups: list[CostGroup]
    totalUsd: str = Money


BudgetAction = Literal["warn", "refuse", "stop"]


class LimitValues(BaseModel):
    maxLiveInstances: int | None = Field(description="null: no limit")
    maxLiveGpus: int | None
    maxBurnRateUsdPerHour: str | None
    monthlyBudgetUsd: str | None
    budgetAction: BudgetAction


class LimitUsage(BaseModel):
    liveInstances: int = Field(description="instances held against the limits (not finished)")
    liveGpus: int
    burnRateUsdPerHour: str = Money
    month: str = Field(description="the UTC calendar month, YYYY-MM")
    monthToDateUsd: str = Field(
        pattern=MONEY, description="spent this month, live instances counted to now"
    )
    budgetSpentPercent: str | None = Field(description="null without a monthly budget")


class UserLimits(BaseModel):
    userId: str
    limits: LimitValues
    defaulted: list[str] = Field(description="the limits that are the deployment's defaults")
    usage: LimitUsage


class BillingRule(BaseModel):
    name: str
    incrementSeconds: int
    minimumSeconds: int
    source: str


class PriceSource(BaseModel):
    url: str = Field(description="the provider's price page the hourly price was read from")
    region: str = Field(description="the region the price is for")
    asOf: str = Field(description="the date the price was read (YYYY-MM-DD)")
    note: str


class InstanceType(BaseModel):
    provider: str
    name: str
    gpu: Gpu
    vcpus: int
    memoryGib: int
    hourlyUsd: str = Money
    price: PriceSource | None = Field(description="where and when the price was read")
    billing: BillingRule
    status: Literal["current", "previous-generation", "retired"] = Field(
        description="`retired`: the provider no longer runs it, it cannot be launched (listed "
        "with include=retired); `previous-generation`: current GPU images do not run on it, "
        "launched only where the deployment allows it, with a warning"
    )
    statusSince: str | None = Field(description="the retirement date (YYYY-MM-DD)")
    statusReason: str | None = Field(description="why the status, in a sentence")
    replacement: str | None = Field(description="the type to use instead")


class InstanceTypeList(BaseModel):
    items: list[InstanceType]


class AgentInstructions(BaseModel):
    """What the service tells the agent after each call."""

    status: InstanceStatus
    heartbeatSeconds: int
    deadmanSeconds: int = Field(description="stop the machine after this long without an answer")
    lifetimeDeadline: str = Field(description="stop the machine at this time in any case")
    stop: bool = Field(description="the instance is stopping: stop the machine now")


class FieldProblem(BaseModel):
    field: str
    problem: str
    allowed: str | None = None


class LimitReached(BaseModel):
    name: str = Field(description="the limit, e.g. maxLiveInstances or monthlyBudgetUsd")
    value: str = Field(description="its value")
    usage: str = Field(description="what is in use (or spent this month)")


class Problem(BaseModel):
    """An RFC 9457 problem document (application/problem+json)."""

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int
    detail: str = Field(description="what is wrong and what is allowed")
    error: str = Field(description="a stable machine-readable code, e.g. invalid_request")
    message: str = Field(description="the same text as `detail`, kept for first-version clients")
    fields: list[FieldProblem] | None = Field(
        default=None, description="for validation errors: each offending field"
    )
    limit: LimitReached | None = Field(
        default=None, description="for quota_exceeded and budget_exhausted: which limit"
    )
