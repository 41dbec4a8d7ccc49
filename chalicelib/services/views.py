"""The JSON shape of an instance record, shared by the API and the lifecycle events: its pydantic
models (the OpenAPI document's schemas for it come from here) and the one function that fills
them from a record."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar, cast, overload

from pydantic import BaseModel, Field

from chalicelib.domain.ids import INSTANCE_ID_PATTERN
from chalicelib.domain.instance import Instance
from chalicelib.domain.states import IN_SERVICE_STATUSES, InstanceStatus

MONEY = r"^[0-9]+(\.[0-9]+)?$"
Money = Field(pattern=MONEY, description="US dollars, as a decimal string")


class Gpu(BaseModel):
    model: str
    count: int


class Billing(BaseModel):
    # The record names its rule and carries its terms; GET /api/instance-types shows the rule
    # itself (BillingRule.to_json()).
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


EvidenceSource = Literal["client", "gpu"]


class Evidence(BaseModel):
    """The last evidence of activity: a client's /activity report, or a busy GPU."""

    at: str
    source: EvidenceSource


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


class Expiry(BaseModel):
    reason: str | None = Field(description="the reason the stop will carry")
    at: str | None = Field(description="when the stop is due")


class ExpiringInstance(InstanceRecord):
    """The `Instance Expiring` event's detail: the record, and the stop it warns of."""

    expiring: Expiry


class OrphanTerminated(BaseModel):
    """The `Instance Orphan Terminated` event's detail: the machine, not a record."""

    provider: str
    region: str
    cloudResourceId: str
    recordId: str | None = Field(description="the machine's provisioner:record-id tag")
    launchedAt: str | None
    ageSeconds: int
    terminatedAt: str


class BudgetWarning(BaseModel):
    """The `Budget Warning` event's detail: a user's month-to-date spend and budget."""

    userId: str
    month: str = Field(description="the UTC month, YYYY-MM")
    monthlyBudgetUsd: str = Money
    spentUsd: str = Money
    spentPercent: str = Field(description="of the budget, to one decimal")
    budgetAction: str


@overload
def iso(moment: datetime) -> str: ...
@overload
def iso(moment: None) -> None: ...
@overload
def iso(moment: datetime | None) -> str | None: ...
def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


Record = TypeVar("Record", bound=InstanceRecord)


def instance_view(instance: Instance, now: datetime) -> dict[str, Any]:
    """The record's JSON (an API answer, a lifecycle event's detail)."""
    return record_as(InstanceRecord, instance, now).model_dump(mode="json")


def record_as(shape: type[Record], instance: Instance, now: datetime, **more: Any) -> Record:
    """The record as callers see it, with its cost computed up to `now`, as `shape`: an
    InstanceRecord, or a model that adds to it the fields given in `more`."""
    cost_until: datetime | None = instance.billing_ended_at or now
    if instance.launched_at is None:
        cost_until = None
    rule = instance.billing_rule
    return shape(
        id=instance.id,
        userId=instance.user_id,
        taskId=instance.task_id,
        provider=instance.provider,
        region=instance.region,
        instanceType=instance.instance_type,
        gpu=Gpu(model=instance.gpu_model, count=instance.gpu_count),
        status=instance.status,
        statusReason=instance.status_reason,
        cloudResourceId=instance.cloud_resource_id,
        privateIp=instance.private_ip,
        publicIp=instance.public_ip,
        hourlyRateUsd=str(instance.hourly_usd),
        billing=Billing(
            rule=rule.name,
            incrementSeconds=rule.increment_seconds,
            minimumSeconds=rule.minimum_seconds,
            startedAt=iso(instance.launched_at),
            endedAt=iso(instance.billing_ended_at),
        ),
        costUsd=str(instance.cost_at(now)),
        costComputedAt=iso(cost_until),
        accruedCostUsd=str(instance.accrued_cost),
        accruedUntil=iso(instance.accrued_until),
        autoTerminateMinutes=instance.idle_timeout_minutes,
        lastActivityAt=iso(instance.last_activity_at),
        idleDeadline=(
            iso(instance.idle_deadline()) if instance.status in IN_SERVICE_STATUSES else None
        ),
        maxLifetimeMinutes=instance.max_lifetime_minutes,
        lifetimeDeadline=(
            iso(instance.lifetime_deadline()) if instance.next_stop() is not None else None
        ),
        createdAt=iso(instance.created_at),
        updatedAt=iso(instance.updated_at),
        readyAt=iso(instance.ready_at),
        terminatedAt=iso(instance.terminated_at),
        executionId=instance.execution_id,
        agent=agent_report(instance),
        lastEvidence=(
            # The record keeps the source as text; the model checks it is one of the two.
            Evidence(
                at=iso(instance.last_evidence_at),
                source=cast(EvidenceSource, instance.last_evidence_source),
            )
            if instance.last_evidence_at is not None else None
        ),
        statusHistory=[
            StatusChange(status=c.status, at=iso(c.at), reason=c.reason)
            for c in instance.status_history
        ],
        metadata=instance.metadata,
        **more,
    )


def agent_report(instance: Instance) -> AgentReport | None:
    """What the agent on the machine reported: the GPUs at boot, and the last heartbeat."""
    report, heartbeat = instance.gpu_report, instance.last_heartbeat
    if report is None and heartbeat is None:
        return None
    return AgentReport(
        reportedAt=iso(report.reported_at) if report else None,
        ok=report.ok if report else None,
        error=report.error if report else None,
        gpus=[
            AgentGpu(index=g.index, name=g.name, memoryTotalMib=g.memory_total_mib,
                     driverVersion=g.driver_version, eccErrors=g.ecc_errors)
            for g in (report.gpus if report else ())
        ],
        lastHeartbeatAt=iso(heartbeat.at) if heartbeat else None,
        utilization=[
            GpuUtilization(index=g.index, utilizationPercent=g.utilization_percent,
                           memoryUsedMib=g.memory_used_mib, processes=g.processes)
            for g in (heartbeat.gpus if heartbeat else ())
        ],
    )
