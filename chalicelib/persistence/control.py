"""The control table: small items that are not instance records (the reaper's lease, and the
idempotency records of POST /api/instances), keyed by (pk, sk), expiring through a TTL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DeleteError, PutError
from pynamodb.models import Model

from chalicelib.persistence.dynamodb import CONDITIONAL_CHECK_FAILED, transient_store_errors
from chalicelib.persistence.sessions import build_client_on

if TYPE_CHECKING:
    from botocore.session import Session

# DynamoDB deletes an item some time after its `expiration` (epoch seconds) has passed.
TTL_ATTRIBUTE = "expiration"


class ControlItem(Model):
    class Meta:
        table_name = "instance-provisioner-control"
        region = "us-east-1"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    holder = UnicodeAttribute(null=True)
    expiration = NumberAttribute(null=True)


def configure_control_model(
    table_name: str, region: str, session: Session | None = None
) -> None:
    """Point the model at a table (with a botocore `session`: its client built on it now)."""
    ControlItem.Meta.table_name = table_name
    ControlItem.Meta.region = region
    ControlItem._connection = None
    if session is not None:
        build_client_on(ControlItem, session)


def create_control_table() -> None:
    """Local runs and tests; a deployment's template creates the table with its TTL."""
    if not ControlItem.exists():
        ControlItem.create_table(billing_mode="PAY_PER_REQUEST", wait=False)
        ControlItem._get_connection().update_time_to_live(TTL_ATTRIBUTE)


class DynamoDbLeases:
    """A lease is held by one holder until it releases it or it expires, so two overlapping
    runs of one job (two reaper ticks) cannot both act."""

    @transient_store_errors
    def acquire(self, name: str, holder: str, now: datetime, duration: timedelta) -> bool:
        item = ControlItem(
            pk=f"lease#{name}", sk="lease", holder=holder,
            expiration=int((now + duration).timestamp()),
        )
        try:
            item.save(
                condition=ControlItem.pk.does_not_exist()
                | (ControlItem.expiration < int(now.timestamp()))
                | (ControlItem.holder == holder)
            )
        except PutError as error:
            if error.cause_response_code == CONDITIONAL_CHECK_FAILED:
                return False
            raise
        return True

    @transient_store_errors
    def release(self, name: str, holder: str) -> None:
        try:
            ControlItem(pk=f"lease#{name}", sk="lease").delete(
                condition=ControlItem.holder == holder
            )
        except DeleteError as error:
            if error.cause_response_code != CONDITIONAL_CHECK_FAILED:
                raise  # another holder's lease (ours expired) is not ours to drop
