"""The DynamoDB adapter of the repository: a PynamoDB model, its five GSIs, and the mapping."""

from __future__ import annotations

import base64
import binascii
import builtins
import functools
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from pynamodb.attributes import (
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.exceptions import PutError, PynamoDBException
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.domain.agent import GpuFound, GpuReport, GpuSample, Heartbeat
from chalicelib.domain.catalog import BillingRule
from chalicelib.domain.costs import RUN_LOOKBACK
from chalicelib.domain.errors import (
    ConcurrentUpdateError,
    StoreUnavailableError,
    ValidationError,
)
from chalicelib.domain.instance import (
    DEFAULT_LIFETIME_MINUTES,
    Instance,
    LifecyclePolicy,
    StatusChange,
)
from chalicelib.domain.states import LIVE_STATUSES, InstanceStatus
from chalicelib.persistence.repository import ListQuery, Page
from chalicelib.persistence.sessions import build_client_on

if TYPE_CHECKING:
    from botocore.session import Session

CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"
# DynamoDB's answers that mean "not now": throttling, its own faults, a conflicting transaction.
TRANSIENT_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "TransactionConflictException",
    "LimitExceededException",
})  # fmt: skip

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def transient_store_errors(call: Callable[P, R]) -> Callable[P, R]:
    """A PynamoDB failure that may pass (throttling, a 5xx, no connection) becomes
    StoreUnavailableError, which the workflow retries; DynamoDB's own text (it names the
    table and the role) goes to the logs, never into the error."""

    @functools.wraps(call)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return call(*args, **kwargs)
        except PynamoDBException as error:
            code = error.cause_response_code
            if code is not None and code not in TRANSIENT_CODES:
                raise
            logger.warning("record store call %s failed (%s): %s", call.__name__, code, error)
            raise StoreUnavailableError(
                f"The record store is unavailable ({code or 'no connection'}); try again."
            ) from error

    return guarded


class UserIndex(GlobalSecondaryIndex["InstanceModel"]):
    """A user's instances, newest first."""

    class Meta:
        index_name = "by-user"
        projection = AllProjection()

    user_id = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class TaskIndex(GlobalSecondaryIndex["InstanceModel"]):
    """The instances started for one analysis task (sparse: only records with a task)."""

    class Meta:
        index_name = "by-task"
        projection = AllProjection()

    task_id = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class UserStatusIndex(GlobalSecondaryIndex["InstanceModel"]):
    """A user's instances in one status, newest first (`user_status` is `<user>#<status>`):
    a status-filtered list reads only the matching records, not the user's history."""

    class Meta:
        index_name = "by-user-status"
        projection = AllProjection()

    user_status = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class LiveIndex(GlobalSecondaryIndex["InstanceModel"]):
    """Live instances by status, ordered by when the reaper must next look at them.

    Sparse: terminal records drop `live_status` and leave the index, so the reaper's
    queries touch only the few live records, never the growing history."""

    class Meta:
        index_name = "live-by-status"
        projection = AllProjection()

    live_status = UnicodeAttribute(hash_key=True)
    due_at = UTCDateTimeAttribute(range_key=True)


class BillingMonthIndex(GlobalSecondaryIndex["InstanceModel"]):
    """Launched records by the UTC month of their launch, in launch order: the cost report
    reads the months of its window (and a bounded lookback) and nothing else.

    Sparse: a record that never launched has no bucket. A finished run longer than the
    lookback (a stop the cloud was slow to carry out), or one finished without a billing end,
    is kept under the bucket "long" instead, which every report also reads."""

    class Meta:
        index_name = "by-billing-month"
        projection = AllProjection()

    billing_bucket = UnicodeAttribute(hash_key=True)
    launched_at = UTCDateTimeAttribute(range_key=True)


LONG_RUN_BUCKET = "long"


def billing_bucket(instance: Instance) -> str | None:
    """The by-billing-month partition of a record (None: not in the index)."""
    if instance.launched_at is None:
        return None
    ended = instance.billing_ended_at
    if instance.status.is_terminal and ended is None:
        return LONG_RUN_BUCKET
    if ended is not None and ended - instance.launched_at > RUN_LOOKBACK:
        return LONG_RUN_BUCKET
    return month_bucket(instance.launched_at)


def month_bucket(moment: datetime) -> str:
    return moment.strftime("%Y-%m")


def months_between(start: datetime, end: datetime) -> list[str]:
    """The month buckets of every moment in [start, end)."""
    months = []
    year, month = start.year, start.month
    last = end - timedelta(microseconds=1)
    while (year, month) <= (last.year, last.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


class StatusChangeMap(MapAttribute[str, Any]):
    def __init__(self, **attributes: Any) -> None:  # typed: MapAttribute's is not
        super().__init__(**attributes)  # type: ignore[no-untyped-call]  # PynamoDB: untyped

    status = UnicodeAttribute()
    at = UTCDateTimeAttribute()
    reason = UnicodeAttribute(null=True)


class InstanceModel(Model):
    class Meta:
        table_name = "instance-provisioner-instances"
        region = "us-east-1"
        host: str | None = None  # another endpoint (none deployed)

    id = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute()
    task_id = UnicodeAttribute(null=True)
    provider = UnicodeAttribute()
    region = UnicodeAttribute()
    instance_type = UnicodeAttribute()
    gpu_model = UnicodeAttribute()
    gpu_count = NumberAttribute()
    status = UnicodeAttribute()
    status_reason = UnicodeAttribute(null=True)
    status_entered_at = UTCDateTimeAttribute()
    cloud_resource_id = UnicodeAttribute(null=True)
    private_ip = UnicodeAttribute(null=True)
    public_ip = UnicodeAttribute(null=True)
    # Money is stored as decimal strings: PynamoDB's NumberAttribute goes through float.
    hourly_usd = UnicodeAttribute()
    billing_rule = JSONAttribute()
    accrued_cost = UnicodeAttribute()
    accrued_until = UTCDateTimeAttribute(null=True)
    launched_at = UTCDateTimeAttribute(null=True)
    billing_ended_at = UTCDateTimeAttribute(null=True)
    idle_timeout_minutes = NumberAttribute()
    last_activity_at = UTCDateTimeAttribute()
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    ready_at = UTCDateTimeAttribute(null=True)
    terminated_at = UTCDateTimeAttribute(null=True)
    execution_id = UnicodeAttribute(null=True)
    terminate_requested_at = UTCDateTimeAttribute(null=True)
    terminate_attempts = NumberAttribute(default=0)
    stuck_reported_at = UTCDateTimeAttribute(null=True)
    max_lifetime_minutes = NumberAttribute(null=True)
    expiry_warned_for = UTCDateTimeAttribute(null=True)
    agent_secret_hash = UnicodeAttribute(null=True)
    gpu_report = JSONAttribute(null=True)
    last_heartbeat = JSONAttribute(null=True)
    last_evidence_at = UTCDateTimeAttribute(null=True)
    last_evidence_source = UnicodeAttribute(null=True)
    status_history = ListAttribute(of=StatusChangeMap, default=list)
    metadata = JSONAttribute(default=dict)
    live_status = UnicodeAttribute(null=True)
    due_at = UTCDateTimeAttribute(null=True)
    billing_bucket = UnicodeAttribute(null=True)
    user_status = UnicodeAttribute(null=True)
    version = VersionAttribute()

    user_index = UserIndex()
    task_index = TaskIndex()
    live_index = LiveIndex()
    billing_month_index = BillingMonthIndex()
    user_status_index = UserStatusIndex()


def configure_instance_model(
    table_name: str, region: str, host: str | None = None, session: Session | None = None
) -> None:
    """Point the model at a table; called by the composition root before first use. With a
    botocore `session`, its client is built now, on that session (persistence/sessions.py);
    without, PynamoDB builds it on a session of its own at the first call."""
    InstanceModel.Meta.table_name = table_name
    InstanceModel.Meta.region = region
    InstanceModel.Meta.host = host
    # PynamoDB caches its connection per model class (its indexes use the model's); drop it
    # so the new settings apply.
    InstanceModel._connection = None
    if session is not None:
        build_client_on(InstanceModel, session)


def create_instance_table(wait: bool = False) -> None:
    """Create the table with on-demand billing (local runs and tests; deployments use CFN)."""
    if not InstanceModel.exists():
        InstanceModel.create_table(billing_mode="PAY_PER_REQUEST", wait=wait)


# -- mapping --------------------------------------------------------------------------


def _to_model(instance: Instance, policy: LifecyclePolicy) -> InstanceModel:
    live = instance.status.is_live
    model = InstanceModel(
        id=instance.id,
        user_id=instance.user_id,
        task_id=instance.task_id,
        provider=instance.provider,
        region=instance.region,
        instance_type=instance.instance_type,
        gpu_model=instance.gpu_model,
        gpu_count=instance.gpu_count,
        status=instance.status.value,
        status_reason=instance.status_reason,
        status_entered_at=instance.status_entered_at,
        cloud_resource_id=instance.cloud_resource_id,
        private_ip=instance.private_ip,
        public_ip=instance.public_ip,
        hourly_usd=str(instance.hourly_usd),
        billing_rule=instance.billing_rule.to_json(),
        accrued_cost=str(instance.accrued_cost),
        accrued_until=instance.accrued_until,
        launched_at=instance.launched_at,
        billing_ended_at=instance.billing_ended_at,
        idle_timeout_minutes=instance.idle_timeout_minutes,
        last_activity_at=instance.last_activity_at,
        created_at=instance.created_at,
        updated_at=instance.updated_at,
        ready_at=instance.ready_at,
        terminated_at=instance.terminated_at,
        execution_id=instance.execution_id,
        terminate_requested_at=instance.terminate_requested_at,
        terminate_attempts=instance.terminate_attempts,
        stuck_reported_at=instance.stuck_reported_at,
        max_lifetime_minutes=instance.max_lifetime_minutes,
        expiry_warned_for=instance.expiry_warned_for,
        agent_secret_hash=instance.agent_secret_hash,
        gpu_report=_report_to_json(instance.gpu_report),
        last_heartbeat=_heartbeat_to_json(instance.last_heartbeat),
        last_evidence_at=instance.last_evidence_at,
        last_evidence_source=instance.last_evidence_source,
        status_history=[
            StatusChangeMap(status=c.status.value, at=c.at, reason=c.reason)
            for c in instance.status_history
        ],
        metadata=instance.metadata,
        live_status=instance.status.value if live else None,
        due_at=instance.due_at(policy) if live else None,
        billing_bucket=billing_bucket(instance),
        user_status=f"{instance.user_id}#{instance.status.value}",
    )
    if instance.version is not None:
        model.version = instance.version
    return model


def _to_instance(model: InstanceModel) -> Instance:
    return Instance(
        id=model.id,
        user_id=model.user_id,
        task_id=model.task_id,
        provider=model.provider,
        region=model.region,
        instance_type=model.instance_type,
        gpu_model=model.gpu_model,
        gpu_count=int(model.gpu_count),
        status=InstanceStatus(model.status),
        status_reason=model.status_reason,
        status_entered_at=model.status_entered_at,
        cloud_resource_id=model.cloud_resource_id,
        private_ip=model.private_ip,
        public_ip=model.public_ip,
        hourly_usd=Decimal(model.hourly_usd),
        billing_rule=BillingRule.from_json(model.billing_rule),
        accrued_cost=Decimal(model.accrued_cost),
        accrued_until=model.accrued_until,
        launched_at=model.launched_at,
        billing_ended_at=model.billing_ended_at,
        idle_timeout_minutes=int(model.idle_timeout_minutes),
        last_activity_at=model.last_activity_at,
        created_at=model.created_at,
        updated_at=model.updated_at,
        ready_at=model.ready_at,
        terminated_at=model.terminated_at,
        execution_id=model.execution_id,
        terminate_requested_at=model.terminate_requested_at,
        terminate_attempts=int(model.terminate_attempts or 0),
        stuck_reported_at=model.stuck_reported_at,
        # Records written before lifetimes existed get the default cap.
        max_lifetime_minutes=int(model.max_lifetime_minutes or DEFAULT_LIFETIME_MINUTES),
        expiry_warned_for=model.expiry_warned_for,
        agent_secret_hash=model.agent_secret_hash,
        gpu_report=_report_from_json(model.gpu_report),
        last_heartbeat=_heartbeat_from_json(model.last_heartbeat),
        last_evidence_at=model.last_evidence_at,
        last_evidence_source=model.last_evidence_source,
        status_history=tuple(
            StatusChange(InstanceStatus(c.status), c.at, c.reason) for c in model.status_history
        ),
        metadata=dict(model.metadata or {}),
        version=model.version,
    )


def _report_to_json(report: GpuReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "ok": report.ok, "error": report.error, "at": report.reported_at.isoformat(),
        "gpus": [
            {"index": g.index, "name": g.name, "memoryTotalMib": g.memory_total_mib,
             "driverVersion": g.driver_version, "eccErrors": g.ecc_errors}
            for g in report.gpus
        ],
    }


def _report_from_json(data: dict[str, Any] | None) -> GpuReport | None:
    if not data:
        return None
    return GpuReport(
        ok=bool(data["ok"]), error=data.get("error"),
        reported_at=datetime.fromisoformat(data["at"]),
        gpus=tuple(
            GpuFound(int(g["index"]), str(g["name"]), _optional_int(g.get("memoryTotalMib")),
                     str(g["driverVersion"]), g.get("eccErrors"))
            for g in data.get("gpus", [])
        ),
    )


def _heartbeat_to_json(heartbeat: Heartbeat | None) -> dict[str, Any] | None:
    if heartbeat is None:
        return None
    return {
        "at": heartbeat.at.isoformat(), "healthy": heartbeat.healthy, "error": heartbeat.error,
        "gpus": [
            {"index": g.index, "utilizationPercent": g.utilization_percent,
             "memoryUsedMib": g.memory_used_mib, "processes": g.processes}
            for g in heartbeat.gpus
        ],
    }


def _heartbeat_from_json(data: dict[str, Any] | None) -> Heartbeat | None:
    if not data:
        return None
    return Heartbeat(
        at=datetime.fromisoformat(data["at"]), healthy=bool(data.get("healthy", True)),
        error=data.get("error"),
        gpus=tuple(
            GpuSample(int(g["index"]), _optional_int(g.get("utilizationPercent")),
                      _optional_int(g.get("memoryUsedMib")), _optional_int(g.get("processes")))
            for g in data.get("gpus", [])
        ),
    )


def _optional_int(value: Any) -> int | None:
    # What nvidia-smi did not know is kept as null.
    return None if value is None else int(value)


# -- cursors --------------------------------------------------------------------------


def _filters_of(query: ListQuery) -> list[str | None]:
    return [query.user_id, query.task_id, query.status.value if query.status else None]


def encode_cursor(last_evaluated_key: dict[str, Any] | None, query: ListQuery) -> str | None:
    """An opaque cursor: DynamoDB's start key, bound to the filters of the listing."""
    if not last_evaluated_key:
        return None
    document = {"k": last_evaluated_key, "f": _filters_of(query)}
    raw = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(
    query: ListQuery, expected_keys: set[str], hash_key: tuple[str, str] | None
) -> dict[str, Any]:
    """The DynamoDB start key hidden in an opaque cursor; ValidationError if it was not made
    by this listing (same caller, same filters)."""
    invalid = ValidationError(
        "The cursor is not valid for this listing; pass back the nextCursor of the previous "
        "page with the same filters, or omit it to start from the first page.",
        fields=[{"field": "cursor", "problem": "not a cursor of this listing"}],
    )
    assert query.cursor is not None
    try:
        padded = query.cursor + "=" * (-len(query.cursor) % 4)
        document = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise invalid from None
    if not isinstance(document, dict) or set(document) != {"k", "f"}:
        raise invalid
    key = document["k"]
    if document["f"] != _filters_of(query):
        raise invalid
    if not isinstance(key, dict) or set(key) != expected_keys:
        raise invalid
    if not all(
        isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str) for v in key.values()
    ):
        raise invalid
    # A cursor cannot be used to walk another user's (or another task's) partition.
    if hash_key is not None and key[hash_key[0]]["S"] != hash_key[1]:
        raise invalid
    return key


# -- the adapter ----------------------------------------------------------------------


class DynamoDbInstanceRepository:
    def __init__(self, policy: LifecyclePolicy) -> None:
        self._policy = policy

    @transient_store_errors
    def add(self, instance: Instance) -> Instance:
        model = _to_model(instance, self._policy)
        try:
            model.save(condition=InstanceModel.id.does_not_exist())
        except PutError as error:
            if error.cause_response_code == CONDITIONAL_CHECK_FAILED:
                raise ConcurrentUpdateError(f"Instance {instance.id} already exists.") from error
            raise
        return _to_instance(model)

    @transient_store_errors
    def get(self, instance_id: str) -> Instance | None:
        try:
            return _to_instance(InstanceModel.get(instance_id, consistent_read=True))
        except InstanceModel.DoesNotExist:
            return None

    @transient_store_errors
    def save(self, instance: Instance, expected_status: InstanceStatus) -> Instance:
        model = _to_model(instance, self._policy)
        try:
            # PynamoDB adds `version = <read version>` to the condition and bumps it.
            model.save(condition=InstanceModel.status == expected_status.value)
        except PutError as error:
            if error.cause_response_code == CONDITIONAL_CHECK_FAILED:
                raise ConcurrentUpdateError(
                    f"Instance {instance.id} changed while this request was being handled; "
                    "read it again and retry."
                ) from error
            raise
        return _to_instance(model)

    @transient_store_errors
    def list(self, query: ListQuery) -> Page:
        """Each filter reads only the matching records: a user's status through by-user-status,
        a task through by-task (the task's records, narrowed to the user and the status),
        a user's whole listing through by-user."""
        filters = []
        if query.task_id is not None:
            # The task's partition; a cursor names a key in it, and the user filter keeps
            # a user's page (and so their cursor) to their own records.
            if query.user_id is not None:
                filters.append(InstanceModel.user_id == query.user_id)
            if query.status is not None:
                filters.append(InstanceModel.status == query.status.value)
            hash_key = ("task_id", query.task_id)
            index: Any = InstanceModel.task_index
            keys = {"id", "task_id", "created_at"}
        elif query.user_id is not None and query.status is not None:
            hash_key = ("user_status", f"{query.user_id}#{query.status.value}")
            index = InstanceModel.user_status_index
            keys = {"id", "user_status", "created_at"}
        elif query.user_id is not None:
            hash_key = ("user_id", query.user_id)
            index = InstanceModel.user_index
            keys = {"id", "user_id", "created_at"}
        else:
            if query.status is not None:
                filters.append(InstanceModel.status == query.status.value)
            return self._scan(query, filters)
        condition = _and(filters)
        start = decode_cursor(query, keys, hash_key) if query.cursor else None
        results = index.query(
            hash_key[1],
            filter_condition=condition,
            scan_index_forward=False,
            limit=query.limit,
            last_evaluated_key=start,
        )
        items = [_to_instance(m) for m in results]
        return Page(items, encode_cursor(results.last_evaluated_key, query))

    def _scan(self, query: ListQuery, filters: builtins.list[Any]) -> Page:
        # Only operators list across users; a scan is the honest tool for "everything".
        start = decode_cursor(query, {"id"}, None) if query.cursor else None
        results = InstanceModel.scan(
            filter_condition=_and(filters), limit=query.limit, last_evaluated_key=start
        )
        items = [_to_instance(m) for m in results]
        return Page(items, encode_cursor(results.last_evaluated_key, query))

    @transient_store_errors
    def get_many(self, instance_ids: frozenset[str]) -> builtins.list[Instance]:
        """The records of these ids (BatchGetItem, 100 a call); missing ones are left out."""
        if not instance_ids:
            return []
        return [
            _to_instance(m)
            for m in InstanceModel.batch_get(sorted(instance_ids), consistent_read=True)
        ]

    @transient_store_errors
    def live(self, status: InstanceStatus) -> builtins.list[Instance]:
        return [_to_instance(m) for m in InstanceModel.live_index.query(status.value)]

    def due(self, status: InstanceStatus, now: datetime) -> Iterator[Instance]:
        for model in InstanceModel.live_index.query(
            status.value, range_key_condition=InstanceModel.due_at <= now
        ):
            yield _to_instance(model)

    def all_for_stats(self, user_id: str | None) -> Iterator[Instance]:
        models = (
            InstanceModel.user_index.query(user_id) if user_id is not None
            else InstanceModel.scan()
        )
        for model in models:
            yield _to_instance(model)


    @transient_store_errors
    def billed_between(
        self, start: datetime, end: datetime, user_id: str | None
    ) -> Iterator[Instance]:
        """Every record that may have billed inside [start, end) (a few more: the report's
        arithmetic drops those that did not): the launches of the window's months and of the
        lookback before it, the long runs, and the live records. Never the older history."""
        owner = None if user_id is None else InstanceModel.user_id == user_id
        earliest = start - RUN_LOOKBACK
        latest = end - timedelta(microseconds=1)
        for month in months_between(earliest, end):
            yield from (_to_instance(m) for m in InstanceModel.billing_month_index.query(
                month,
                range_key_condition=InstanceModel.launched_at.between(earliest, latest),
                filter_condition=owner,
            ))
        yield from (_to_instance(m) for m in InstanceModel.billing_month_index.query(
            LONG_RUN_BUCKET, range_key_condition=InstanceModel.launched_at <= latest,
            filter_condition=owner,
        ))
        for status in LIVE_STATUSES:
            for model in InstanceModel.live_index.query(status.value, filter_condition=owner):
                if model.launched_at is not None and model.launched_at < end:
                    yield _to_instance(model)


def _and(conditions: list[Any]) -> Any:
    combined = None
    for condition in conditions:
        combined = condition if combined is None else combined & condition
    return combined
