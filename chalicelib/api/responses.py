"""Response bodies, as pydantic models: the OpenAPI document's schemas come from here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from chalicelib.domain.ids import INSTANCE_ID_PATTERN
from chalicelib.domain.states import InstanceStatus

MONEY = r"^[0-9]+(\.[0-9]+)?$"
Money = Field(pattern=MONEY, description="US dollars, as a decimal string")


class Gpu(BaseModel):
    model: str
    count: int


class Billing(BaseModel):
    rule: str
    incrementSeconds: int
    minimumSeconds: int
    startedAt: str | None = Field(description="when the cloud accepted the launch")
    endedAt: str | None = Field(description="when the cloud accepted the termination")


class StatusChange(BaseModel):
    status: InstanceStatus
    at: str
    reason: str | None


class AgentGpu(BaseModel):
    index: int
    name: str = Field(description="as nvidia-smi names it, e.g. Tesla T4")
    memoryTotalMib: int | None = Field(description="null where nvidia-smi gave none")
    driverVersion: str
    eccErrors: int | None


class GpuUtilization(BaseModel):
    index: int
    utilizationPercent: int | None = Field(description="null where nvidia-smi gave none")
    memoryUsedMib: int | None
    processes: int | None = Field(description="null when the process query failed")


class AgentReport(BaseModel):
    """What the agent on the machine found at boot, and its last heartbeat."""

    reportedAt: str | None
    ok: bool | None
    error: str | None
    gpus: list[AgentGpu]
    lastHeartbeatAt: str | None
    utilization: list[GpuUtilization]


class Evidence(BaseModel):
    """The last evidence of activity: a client's /activity report, or a busy GPU."""

    at: str
    source: Literal["client", "gpu"]


class InstanceRecord(BaseModel):
    """An instance as its owner sees it; `costUsd` is computed up to the moment of the read."""

    id: str = Field(pattern=INSTANCE_ID_PATTERN)
    userId: str
    taskId: str | None
    provider: str
    region: str
    instanceType: str
    gpu: Gpu
    status: InstanceStatus
    statusReason: str | None
    cloudResourceId: str | None
    privateIp: str | None
    publicIp: str | None
    hourlyRateUsd: str = Money
    billing: Billing
    costUsd: str = Money
    costComputedAt: str | None
    accruedCostUsd: str = Money
    accruedUntil: str | None
    autoTerminateMinutes: int
    lastActivityAt: str
    idleDeadline: str | None = Field(
        description="when the idle timeout stops it (READY or RUNNING only)"
    )
    maxLifetimeMinutes: int
    lifetimeDeadline: str | None = Field(
        description="when its lifetime stops it, whatever its activity (live, not stopping)"
    )
    createdAt: str
    updatedAt: str
    readyAt: str | None
    terminatedAt: str | None
    executionId: str | None
    agent: AgentReport | None = Field(description="set once the agent on the machine reported")
    lastEvidence: Evidence | None
    statusHistory: list[StatusChange]
    metadata: dict[str, Any]


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

    from_: str = Field(alias="from")
    to: str
    groupBy: str
    groups: list[CostGroup]
    totalUsd: str = Money


class LimitValues(BaseModel):
    maxLiveInstances: int | None = Field(description="null: no limit")
    maxLiveGpus: int | None
    maxBurnRateUsdPerHour: str | None
    monthlyBudgetUsd: str | None
    budgetAction: Literal["warn", "refuse", "stop"]


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
