"""The JSON shape of an instance record, shared by the API and the lifecycle events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalicelib.domain.instance import Instance
from chalicelib.domain.states import IN_SERVICE_STATUSES


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def instance_view(instance: Instance, now: datetime) -> dict[str, Any]:
    """The record as callers see it, with its cost computed up to `now`."""
    cost_until = instance.billing_ended_at or now
    if instance.launched_at is None:
        cost_until = None
    return {
        "id": instance.id,
        "userId": instance.user_id,
        "taskId": instance.task_id,
        "provider": instance.provider,
        "region": instance.region,
        "instanceType": instance.instance_type,
        "gpu": {"model": instance.gpu_model, "count": instance.gpu_count},
        "status": instance.status.value,
        "statusReason": instance.status_reason,
        "cloudResourceId": instance.cloud_resource_id,
        "privateIp": instance.private_ip,
        "publicIp": instance.public_ip,
        "hourlyRateUsd": str(instance.hourly_usd),
        "billing": {
            "rule": instance.billing_rule.name,
            "incrementSeconds": instance.billing_rule.increment_seconds,
            "minimumSeconds": instance.billing_rule.minimum_seconds,
            "startedAt": iso(instance.launched_at),
            "endedAt": iso(instance.billing_ended_at),
        },
        "costUsd": str(instance.cost_at(now)),
        "costComputedAt": iso(cost_until),
        "accruedCostUsd": str(instance.accrued_cost),
        "accruedUntil": iso(instance.accrued_until),
        "autoTerminateMinutes": instance.idle_timeout_minutes,
        "lastActivityAt": iso(instance.last_activity_at),
        "idleDeadline": (
            iso(instance.idle_deadline()) if instance.status in IN_SERVICE_STATUSES else None
        ),
        "maxLifetimeMinutes": instance.max_lifetime_minutes,
        "lifetimeDeadline": (
            iso(instance.lifetime_deadline()) if instance.next_stop() is not None else None
        ),
        "createdAt": iso(instance.created_at),
        "updatedAt": iso(instance.updated_at),
        "readyAt": iso(instance.ready_at),
        "terminatedAt": iso(instance.terminated_at),
        "executionId": instance.execution_id,
        "agent": agent_view(instance),
        "lastEvidence": (
            {"at": iso(instance.last_evidence_at), "source": instance.last_evidence_source}
            if instance.last_evidence_at is not None else None
        ),
        "statusHistory": [
            {"status": c.status.value, "at": iso(c.at), "reason": c.reason}
            for c in instance.status_history
        ],
        "metadata": instance.metadata,
    }


def agent_view(instance: Instance) -> dict[str, Any] | None:
    """What the agent on the machine reported: the GPUs at boot, and the last heartbeat."""
    report, heartbeat = instance.gpu_report, instance.last_heartbeat
    if report is None and heartbeat is None:
        return None
    return {
        "reportedAt": iso(report.reported_at) if report else None,
        "ok": report.ok if report else None,
        "error": report.error if report else None,
        "gpus": [
            {"index": g.index, "name": g.name, "memoryTotalMib": g.memory_total_mib,
             "driverVersion": g.driver_version, "eccErrors": g.ecc_errors}
            for g in (report.gpus if report else ())
        ],
        "lastHeartbeatAt": iso(heartbeat.at) if heartbeat else None,
        "utilization": [
            {"index": g.index, "utilizationPercent": g.utilization_percent,
             "memoryUsedMib": g.memory_used_mib, "processes": g.processes}
            for g in (heartbeat.gpus if heartbeat else ())
        ],
    }
