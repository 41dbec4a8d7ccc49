"""Idempotent requests (the Idempotency-Key header of POST /api/instances) through Powertools
for AWS Lambda's idempotency utility, kept in the control table (chalicelib/persistence/
control.py): the first request with a key runs, a repeat within the window gets its stored
answer, a repeat with another body is refused, and concurrent ones cannot both run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.domain.errors import (
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    StoreUnavailableError,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

logger = logging.getLogger(__name__)

# How long a key answers with its first request's result.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
# A request that never finished (its Lambda died) frees its key after the API's own timeout.
REQUEST_DEADLINE = timedelta(seconds=29)


@dataclass(frozen=True)
class _Deadline:
    """What Powertools asks of a Lambda context: how long the request may still run."""

    remaining: timedelta

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining.total_seconds() * 1000)


class PowertoolsIdempotency:
    def __init__(self, table_name: str, dynamodb_client: DynamoDBClient) -> None:
        # Imported here: only a POST carrying an Idempotency-Key pays for it.
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
        )

        self._store = DynamoDBPersistenceLayer(
            table_name=table_name,
            key_attr="pk",
            sort_key_attr="sk",
            static_pk_value="idempotency#provision",
            boto3_client=dynamodb_client,
        )
        self._config = IdempotencyConfig(
            event_key_jmespath="[scope, key]",
            payload_validation_jmespath="payload",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=int(IDEMPOTENCY_WINDOW.total_seconds()),
        )
        self._config.register_lambda_context(_Deadline(REQUEST_DEADLINE))  # type: ignore[arg-type]

    def once(
        self,
        scope: str,
        key: str,
        payload: dict[str, Any],
        action: Callable[[], dict[str, Any]],
    ) -> tuple[dict[str, Any], bool]:
        """The result of `action` for (scope, key), running it only the first time; and
        whether this call replayed a stored result."""
        from aws_lambda_powertools.utilities.idempotency import idempotent_function
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
            IdempotencyValidationError,
        )

        ran = False

        def run(request: dict[str, Any]) -> dict[str, Any]:
            nonlocal ran
            ran = True
            return action()

        # Powertools declares the wrapped function as Any; it is `run`, called by keyword.
        guarded: Callable[..., dict[str, Any]] = idempotent_function(
            run,
            data_keyword_argument="request",
            persistence_store=self._store,
            config=self._config,
            key_prefix="provision",
        )
        try:
            result = guarded(request={"scope": scope, "key": key, "payload": payload})
        except IdempotencyValidationError:
            raise IdempotencyKeyReusedError(
                f"Idempotency-Key {key!r} was used for a request with another body in the "
                "last 24 hours; send a new key for a new request.",
                key,
            ) from None
        except IdempotencyAlreadyInProgressError:
            raise IdempotencyKeyInUseError(
                f"A request with Idempotency-Key {key!r} is still being handled; retry in a "
                "few seconds to get its answer.",
                key,
            ) from None
        except IdempotencyPersistenceLayerError as error:
            logger.warning("idempotency store failed for key %r: %s", key, error)
            raise StoreUnavailableError(
                "The service could not check the Idempotency-Key now; try again."
            ) from error
        return dict(result), not ran
