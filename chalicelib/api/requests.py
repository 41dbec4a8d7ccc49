"""Request bodies and query strings, validated by pydantic; unknown fields are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

from chalicelib.domain.ids import USER_ID_PATTERN
from chalicelib.domain.instance import (
    DEFAULT_IDLE_TIMEOUT_MINUTES,
    MAX_IDLE_TIMEOUT_MINUTES,
    MAX_LIFETIME_MINUTES,
    MIN_IDLE_TIMEOUT_MINUTES,
    MIN_LIFETIME_MINUTES,
)
from chalicelib.domain.states import InstanceStatus

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
METADATA_MAX_KEYS = 32
METADATA_MAX_DEPTH = 4
METADATA_MAX_BYTES = 8192


INSTANCE_TYPE_PATTERN = r"^[A-Za-z0-9._-]+$"
GPU_MODEL_PATTERN = r"^[A-Za-z0-9-]{1,16}$"


class _ProvisionCommon(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]{2,32}$")
    taskId: str | None = Field(default=None, pattern=TASK_ID_PATTERN)
    autoTerminateMinutes: int = Field(
        default=DEFAULT_IDLE_TIMEOUT_MINUTES,
        ge=MIN_IDLE_TIMEOUT_MINUTES,
        le=MAX_IDLE_TIMEOUT_MINUTES,
        description="Idle minutes before the instance is terminated.",
    )
    maxLifetimeMinutes: int | None = Field(
        default=None,
        ge=MIN_LIFETIME_MINUTES,
        le=MAX_LIFETIME_MINUTES,
        description=(
            "Minutes after its creation at which the instance is stopped whatever its "
            "activity (default: the deployment's, 720)."
        ),
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description=(
            f"Caller data kept on the record: at most {METADATA_MAX_KEYS} keys, "
            f"{METADATA_MAX_DEPTH} levels deep, {METADATA_MAX_BYTES} bytes as JSON."
        ),
    )

    @field_validator("metadata")
    @classmethod
    def metadata_is_bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        if len(value) > METADATA_MAX_KEYS:
            raise ValueError(f"at most {METADATA_MAX_KEYS} keys")
        if depth_exceeds(value, METADATA_MAX_DEPTH):
            raise ValueError(f"nested at most {METADATA_MAX_DEPTH} levels deep")
        if len(json.dumps(value, separators=(",", ":"))) > METADATA_MAX_BYTES:
            raise ValueError(f"at most {METADATA_MAX_BYTES} bytes as JSON")
        return value


class ProvisionByType(_ProvisionCommon):
    """Provision a named instance type."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"instanceType": "g4dn.xlarge", "taskId": "scan-0042"}]}
    )

    instanceType: str = Field(
        min_length=1, max_length=64, pattern=INSTANCE_TYPE_PATTERN,
        description="A type from GET /api/instance-types.",
    )
    provider: Literal["aws", "azure"] | None = Field(
        default=None, description="The provider of the type (optional: names are unique)."
    )


class ProvisionByRequirement(_ProvisionCommon):
    """Provision the cheapest catalog type with at least `gpuCount` GPUs of model `gpu`."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"gpu": "T4", "gpuCount": 1, "provider": "any"}]}
    )

    gpu: str = Field(pattern=GPU_MODEL_PATTERN, description="A GPU model, e.g. T4 or V100.")
    gpuCount: int = Field(default=1, ge=1, le=16, description="At least this many GPUs.")
    provider: Literal["aws", "azure", "any"] = Field(
        default="any", description="Search one provider, or any."
    )


class ProvisionBody(RootModel[ProvisionByType | ProvisionByRequirement]):
    """A named `instanceType`, or a requirement (`gpu`, `gpuCount`, `provider`)."""

    @classmethod
    def branch_for(cls, data: dict[str, Any]) -> type[_ProvisionCommon]:
        # The body names its kind: a `gpu` key makes it a requirement. Validating against
        # that one branch gives errors about the caller's fields, not about both shapes.
        return ProvisionByRequirement if "gpu" in data else ProvisionByType


class InstanceTypesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["aws", "azure"] | None = None
    gpu: str | None = Field(default=None, pattern=GPU_MODEL_PATTERN)
    minGpus: int = Field(default=0, ge=0, le=16)
    include: Literal["retired"] | None = Field(
        default=None,
        description="`retired` also lists the types their provider retired (hidden by "
        "default: they cannot be launched, but old records still name them).",
    )


class NoQuery(BaseModel):
    """An operation that takes no query parameters: any is refused."""

    model_config = ConfigDict(extra="forbid")


class LimitsBody(BaseModel):
    """New limits for a live instance: either or both."""

    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"examples": [{"autoTerminateMinutes": 60}]},
    )

    autoTerminateMinutes: int | None = Field(
        default=None, ge=MIN_IDLE_TIMEOUT_MINUTES, le=MAX_IDLE_TIMEOUT_MINUTES,
        description="Idle minutes before the instance is terminated, from its last activity.",
    )
    maxLifetimeMinutes: int | None = Field(
        default=None, ge=MIN_LIFETIME_MINUTES, le=MAX_LIFETIME_MINUTES,
        description="Minutes after its creation at which the instance is stopped; not below "
        "the minutes it has already lived.",
    )


MONEY_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,6})?$"


class UserLimitsBody(BaseModel):
    """A user's own limits (operators only). Each field is optional: absent, the deployment's
    default applies; null, there is no such limit. The PUT replaces the earlier values."""

    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"examples": [{"maxLiveInstances": 1, "monthlyBudgetUsd": "250",
                                         "budgetAction": "refuse"}]},
    )

    maxLiveInstances: int | None = Field(default=None, ge=0, le=10_000)
    maxLiveGpus: int | None = Field(default=None, ge=0, le=100_000)
    maxBurnRateUsdPerHour: str | None = Field(
        default=None, pattern=MONEY_PATTERN,
        description="The most the user's live instances may cost an hour together (USD).",
    )
    monthlyBudgetUsd: str | None = Field(
        default=None, pattern=MONEY_PATTERN,
        description="Spend per UTC calendar month (USD): a Budget Warning at 80%, the "
        "`budgetAction` at 100%.",
    )
    budgetAction: Literal["warn", "refuse", "stop"] = Field(
        default="warn",
        description="At 100% of the budget: only warn, refuse new instances, or also stop "
        "the live ones.",
    )


class ActivityBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    state: Literal["running", "idle"]


class ListQueryParams(BaseModel):
    # Query strings arrive as text: numbers are parsed (lax), unknown names refused.
    model_config = ConfigDict(extra="forbid")

    status: InstanceStatus | None = None
    taskId: str | None = Field(default=None, pattern=TASK_ID_PATTERN)
    userId: str | None = Field(default=None, pattern=USER_ID_PATTERN)
    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, min_length=1, max_length=2048)


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest deeper than `limit` in `value`; iterative, so no depth
    of nesting can exhaust the interpreter's recursion limit."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        if depth + 1 > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False
class CostQuery(BaseModel):
    """The window [from, to) and how to group it (query parameters)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    from_: datetime | None = Field(
        default=None, alias="from",
        description="Start of the window (inclusive): an ISO 8601 time with its offset "
        "(e.g. 2026-03-01T00:00:00Z) or a date (UTC midnight). Default: the start of the "
        "UTC month the window ends in (this month when `to` is not given).",
    )
    to: datetime | None = Field(
        default=None,
        description="End of the window (exclusive), as `from`; at most 92 days after it. "
        "Default: now.",
    )
    groupBy: Literal["user", "task", "instanceType", "provider", "day"] = Field(
        default="user", description="What each group is: a user, a task, a type, a "
        "provider, or a UTC day.",
    )
    userId: str | None = Field(
        default=None, pattern=USER_ID_PATTERN,
        description="Operators: one user's costs only.",
    )

    @field_validator("from_", "to", mode="before")
    @classmethod
    def moment_with_offset(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if len(text) == 10:  # a date: that day's UTC midnight
            text += "T00:00:00+00:00"
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError("not an ISO 8601 time, e.g. 2026-03-01T00:00:00Z") from None
        if moment.tzinfo is None:
            raise ValueError("give the offset, e.g. 2026-03-01T00:00:00Z")
        return moment.astimezone(UTC)


class AgentGpuBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a newer agent may say more

    index: int = Field(ge=0, le=63)
    name: str = Field(max_length=128)
    memoryTotalMib: int | None = Field(default=None, ge=0)  # None: nvidia-smi said [N/A]
    driverVersion: str = Field(max_length=64)
    eccErrors: int | None = Field(default=None, ge=0)


class AgentReadyBody(BaseModel):
    """The agent's boot report (see docs/agent.md)."""

    model_config = ConfigDict(extra="ignore")

    ok: bool
    gpus: list[AgentGpuBody] = Field(default_factory=list, max_length=64)
    error: str | None = Field(default=None, max_length=500)


class AgentGpuSampleBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: int = Field(ge=0, le=63)
    # None where nvidia-smi answers [N/A] or its process query failed.
    utilizationPercent: int | None = Field(default=None, ge=0, le=100)
    memoryUsedMib: int | None = Field(default=None, ge=0)
    processes: int | None = Field(default=None, ge=0)


class AgentHeartbeatBody(BaseModel):
    """The agent's heartbeat (see docs/agent.md)."""

    model_config = ConfigDict(extra="ignore")

    gpus: list[AgentGpuSampleBody] = Field(default_factory=list, max_length=64)
    healthy: bool = True
    error: str | None = Field(default=None, max_length=500)
