"""Request bodies and query strings, validated by pydantic; unknown fields are refused."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chalicelib.domain.instance import (
    DEFAULT_IDLE_TIMEOUT_MINUTES,
    MAX_IDLE_TIMEOUT_MINUTES,
    MIN_IDLE_TIMEOUT_MINUTES,
)
from chalicelib.domain.states import InstanceStatus

INSTANCE_ID_PATTERN = r"^inst-[0-9a-f]{32}$"
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
METADATA_MAX_KEYS = 32
METADATA_MAX_DEPTH = 4
METADATA_MAX_BYTES = 8192


class ProvisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    instanceType: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    provider: Literal["aws", "azure"] | None = None
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]{2,32}$")
    taskId: str | None = Field(default=None, pattern=TASK_ID_PATTERN)
    autoTerminateMinutes: int = Field(
        default=DEFAULT_IDLE_TIMEOUT_MINUTES,
        ge=MIN_IDLE_TIMEOUT_MINUTES,
        le=MAX_IDLE_TIMEOUT_MINUTES,
    )
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def metadata_is_bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        if len(value) > METADATA_MAX_KEYS:
            raise ValueError(f"at most {METADATA_MAX_KEYS} keys")
        if _depth(value) > METADATA_MAX_DEPTH:
            raise ValueError(f"nested at most {METADATA_MAX_DEPTH} levels deep")
        if len(json.dumps(value, separators=(",", ":"))) > METADATA_MAX_BYTES:
            raise ValueError(f"at most {METADATA_MAX_BYTES} bytes as JSON")
        return value


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


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0
