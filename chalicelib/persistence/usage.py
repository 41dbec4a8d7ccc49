"""Per-user limits and usage in the control table, with DynamoDB's own client (its numbers
are exact decimals; PynamoDB's NumberAttribute would go through float).

Items:
- pk `user#<id>`, sk `limits`: the operator's overrides of the default limits, as JSON;
- pk `user#<id>`, sk `budget-warning#<YYYY-MM>`: written once when that month's Budget
  Warning went out;
- pk `usage`, sk `user#<id>`: what the user's live instances hold (`instances`, `gpus`,
  `burn` in USD/h) and `holders`, the ids holding it; and the totals of the user's finished
  instances (`finished#<status>`, `finished-provider#<provider>`, `finished_cost`,
  `launched-hourly#<billing rule>`, `first_launch`), which the stats read instead of the
  history. A reservation is one conditional UpdateItem that adds the instance only if the
  sums stay within the limits, so concurrent requests cannot together pass a limit;
  releasing is the reverse, once per id, in the same write that adds the instance to the
  finished totals (so each finished instance is counted exactly once). One partition holds
  every user's usage item: an operator's stats read them with one Query.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.errors import StoreUnavailableError
from chalicelib.domain.limits import Limits, Usage
from chalicelib.domain.stats import FinishedShare, FinishedTotals
from chalicelib.persistence.dynamodb import CONDITIONAL_CHECK_FAILED, TRANSIENT_CODES

logger = logging.getLogger(__name__)
# A warning marker outlives its month, then DynamoDB's TTL drops it.
WARNING_MARKER_TTL = timedelta(days=62)


def _pk(user_id: str) -> dict[str, str]:
    return {"S": f"user#{user_id}"}


USAGE_PK = {"S": "usage"}


def _usage_key(user_id: str) -> dict[str, dict[str, str]]:
    return {"pk": USAGE_PK, "sk": {"S": f"user#{user_id}"}}


def _number(item: dict[str, Any], name: str) -> Decimal:
    value = item.get(name)
    return Decimal(value["N"]) if value else Decimal("0")


class DynamoDbUsage:
    def __init__(self, table_name: str, client: Callable[[], Any]) -> None:
        self.table = table_name
        self._client = client

    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client, asked for at the first call (a read of a record makes
        none, so a cold GET does not build it)."""
        return self._client()

    # -- limits -------------------------------------------------------------------------

    def overrides(self, user_id: str) -> dict[str, Any]:
        """The user's own limits by field name (a None value: explicitly no limit)."""
        item = self._get(user_id, "limits")
        if not item:
            return {}
        raw = json.loads(item["limits"]["S"])
        return {
            name: (Decimal(v) if name in ("max_burn_rate", "monthly_budget") and v is not None
                   else v)
            for name, v in raw.items()
        }

    def set_overrides(self, user_id: str, overrides: dict[str, Any]) -> None:
        document = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in overrides.items()}
        self._call("put_item", TableName=self.table, Item={
            "pk": _pk(user_id), "sk": {"S": "limits"},
            "limits": {"S": json.dumps(document, sort_keys=True)},
        })

    # -- usage --------------------------------------------------------------------------

    def usage(self, user_id: str) -> tuple[Usage, frozenset[str]]:
        answer = self._call(
            "get_item", TableName=self.table, Key=_usage_key(user_id), ConsistentRead=True
        )
        item = answer.get("Item") or {}
        return _usage_of(item), frozenset(item.get("holders", {}).get("SS", []))

    def finished_totals(self, user_id: str | None) -> FinishedTotals:
        return self.aggregates(user_id)[0]

    def aggregates(self, user_id: str | None) -> tuple[FinishedTotals, frozenset[str]]:
        """The totals of the finished instances of one user, or (None) of every user, and
        the ids of their live instances: one item, or one Query of the usage partition (an
        item per user, not per record)."""
        if user_id is not None:
            answer = self._call(
                "get_item", TableName=self.table, Key=_usage_key(user_id), ConsistentRead=True
            )
            item = answer.get("Item") or {}
            return _totals_of(item), frozenset(item.get("holders", {}).get("SS", []))
        totals = FinishedTotals()
        holders: set[str] = set()
        start: dict[str, Any] | None = None
        while True:
            params: dict[str, Any] = {
                "TableName": self.table, "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": USAGE_PK}, "ConsistentRead": True,
            }
            if start:
                params["ExclusiveStartKey"] = start
            answer = self._call("query", **params)
            for item in answer.get("Items", []):
                totals = totals.plus(_totals_of(item))
                holders.update(item.get("holders", {}).get("SS", []))
            start = answer.get("LastEvaluatedKey")
            if not start:
                return totals, frozenset(holders)

    def reserve(
        self, user_id: str, instance_id: str, gpus: int, hourly_usd: Decimal, limits: Limits
    ) -> bool:
        """Add the instance to the user's usage if the sums stay within `limits` (checked by
        DynamoDB in the same write); False if they would not. Reserving twice is a no-op."""
        conditions = ["NOT contains(holders, :id)"]
        values: dict[str, Any] = {
            ":one": {"N": "1"}, ":g": {"N": str(gpus)}, ":h": {"N": str(hourly_usd)},
            ":ids": {"SS": [instance_id]}, ":id": {"S": instance_id},
        }
        for attribute, limit, adds in (
            ("instances", limits.max_live_instances, 1),
            ("gpus", limits.max_live_gpus, gpus),
            ("burn", limits.max_burn_rate, hourly_usd),
        ):
            if limit is not None:
                conditions.append(
                    f"(attribute_not_exists({attribute}) OR {attribute} <= :max_{attribute})"
                )
                values[f":max_{attribute}"] = {"N": str(limit - adds)}
        try:
            self._call(
                "update_item", TableName=self.table,
                Key=_usage_key(user_id),
                UpdateExpression="ADD instances :one, gpus :g, burn :h, holders :ids",
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeValues=values,
            )
        except _ConditionFailed:
            _, holders = self.usage(user_id)
            return instance_id in holders
        return True

    def release(self, finished: FinishedShare) -> bool:
        """Take a finished instance out of the usage and into the finished totals, in one
        write (two when it launched before every instance finished so far); False if it held
        nothing (already released, or provisioned before quotas)."""
        key = _usage_key(finished.user_id)
        names = {
            "#status": f"finished#{finished.status}",
            "#provider": f"finished-provider#{finished.provider}",
        }
        values: dict[str, Any] = {
            ":minus": {"N": "-1"}, ":one": {"N": "1"}, ":g": {"N": str(-finished.gpus)},
            ":h": {"N": str(-finished.hourly_usd)}, ":ids": {"SS": [finished.instance_id]},
            ":id": {"S": finished.instance_id}, ":cost": {"N": str(finished.cost)},
        }
        adds = ("instances :minus, gpus :g, burn :h, #status :one, #provider :one, "
                "finished_cost :cost")
        sets = ""
        if finished.launched_at is not None:
            names["#rule"] = f"launched-hourly#{finished.billing_rule}"
            values[":rate"] = {"N": str(finished.hourly_usd)}
            values[":t"] = {"S": finished.launched_at.isoformat()}
            adds += ", #rule :rate"
            # The earliest launch is a min: set here if none yet; the item as it was before
            # says whether this launch is earlier than the one kept.
            sets = "SET first_launch = if_not_exists(first_launch, :t) "
        try:
            answer = self._call(
                "update_item", TableName=self.table, Key=key,
                UpdateExpression=f"{sets}ADD {adds} DELETE holders :ids",
                ConditionExpression="contains(holders, :id)",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
            )
        except _ConditionFailed:
            return False
        first = answer.get("Attributes", {}).get("first_launch", {}).get("S")  # before
        if finished.launched_at is not None and first and first > values[":t"]["S"]:
            self._set_first_launch(key, finished, "")  # launched before every other finished
        return True

    def rebill(self, before: FinishedShare, after: FinishedShare) -> bool:
        """A finished instance billed again (a machine of it found later), whose release has
        counted `before` in the finished totals: they take the difference. Refused (False)
        while it still holds usage (its release, still to come, counts it whole), for a user
        with no usage item, or when nothing changed."""
        key = _usage_key(after.user_id)
        newly_launched = before.launched_at is None and after.launched_at is not None
        if after.cost == before.cost and not newly_launched:
            return False
        names: dict[str, str] = {}
        values: dict[str, Any] = {
            ":cost": {"N": str(after.cost - before.cost)}, ":id": {"S": after.instance_id},
        }
        adds = "finished_cost :cost"
        if newly_launched:
            names["#rule"] = f"launched-hourly#{after.billing_rule}"
            values[":rate"] = {"N": str(after.hourly_usd)}
            adds += ", #rule :rate"
        try:
            self._call(
                "update_item", TableName=self.table, Key=key, UpdateExpression=f"ADD {adds}",
                ConditionExpression="attribute_exists(pk) AND NOT contains(holders, :id)",
                ExpressionAttributeValues=values,
                **({"ExpressionAttributeNames": names} if names else {}),
            )
        except _ConditionFailed:
            return False
        if newly_launched:  # the item exists: the write above found it
            self._set_first_launch(key, after, "attribute_exists(pk) AND ")
        return True

    # -- budget warnings ----------------------------------------------------------------

    def mark_warned(self, user_id: str, month: str, now: datetime) -> bool:
        """True the first time for this user and month (the warning is then sent)."""
        try:
            self._call(
                "put_item", TableName=self.table,
                Item={
                    "pk": _pk(user_id), "sk": {"S": f"budget-warning#{month}"},
                    "expiration": {"N": str(int((now + WARNING_MARKER_TTL).timestamp()))},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except _ConditionFailed:
            return False
        return True

    # -- helpers ------------------------------------------------------------------------

    def _set_first_launch(self, key: dict[str, Any], finished: FinishedShare, when: str) -> None:
        """The earliest launch: a min kept by a conditional write (losing is fine)."""
        assert finished.launched_at is not None
        values = {":t": {"S": finished.launched_at.isoformat()}}
        if ":id" in when:
            values[":id"] = {"S": finished.instance_id}
        with contextlib.suppress(_ConditionFailed):
            self._call(
                "update_item", TableName=self.table, Key=key,
                UpdateExpression="SET first_launch = :t",
                ConditionExpression=when
                + "(attribute_not_exists(first_launch) OR first_launch > :t)",
                ExpressionAttributeValues=values,
            )

    def _get(self, user_id: str, sort_key: str) -> dict[str, Any] | None:
        answer = self._call(
            "get_item", TableName=self.table,
            Key={"pk": _pk(user_id), "sk": {"S": sort_key}}, ConsistentRead=True,
        )
        item: dict[str, Any] | None = answer.get("Item")
        return item

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = getattr(self.client, operation)(**params)
            return answer
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code == CONDITIONAL_CHECK_FAILED:
                raise _ConditionFailed from error
            if code in TRANSIENT_CODES:
                logger.warning("control table call %s failed (%s)", operation, code)
                raise StoreUnavailableError(
                    f"The record store is unavailable ({code}); try again."
                ) from error
            raise
        except BotoCoreError as error:
            logger.warning("control table call %s failed: %s", operation, error)
            raise StoreUnavailableError(
                "The record store is unavailable (no connection); try again."
            ) from error


def _usage_of(item: dict[str, Any]) -> Usage:
    return Usage(
        int(_number(item, "instances")), int(_number(item, "gpus")), _number(item, "burn")
    )


def _totals_of(item: dict[str, Any]) -> FinishedTotals:
    by_status: dict[str, int] = {}
    by_provider: dict[str, int] = {}
    hourly_by_rule: dict[str, Decimal] = {}
    for name, value in item.items():
        kind, _, what = name.partition("#")
        if kind == "finished":
            by_status[what] = int(Decimal(value["N"]))
        elif kind == "finished-provider":
            by_provider[what] = int(Decimal(value["N"]))
        elif kind == "launched-hourly":
            hourly_by_rule[what] = Decimal(value["N"])
    first = item.get("first_launch", {}).get("S")
    return FinishedTotals(
        by_status=by_status, by_provider=by_provider, cost=_number(item, "finished_cost"),
        hourly_by_rule=hourly_by_rule,
        first_launch=datetime.fromisoformat(first) if first else None,
    )


class _ConditionFailed(Exception):
    """DynamoDB refused a conditional write."""
