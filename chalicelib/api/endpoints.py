"""What each route does with a request: parse, authenticate, call one use case, shape the answer."""

from __future__ import annotations

import json
import re
from typing import Any

import pydantic
from chalice import Response
from chalice.app import Request

from chalicelib.api.errors import validation_error
from chalicelib.api.identity import caller_from
from chalicelib.api.requests import (
    INSTANCE_ID_PATTERN,
    ActivityBody,
    ListQueryParams,
    ProvisionBody,
)
from chalicelib.bootstrap import Container
from chalicelib.domain.errors import (
    InstanceNotFoundError,
    PayloadTooLargeError,
    ValidationError,
)
from chalicelib.domain.identity import Caller
from chalicelib.services.instances import ProvisionRequest
from chalicelib.services.views import instance_view, iso

_INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)
MAX_BODY_BYTES = 64 * 1024


class Endpoints:
    def __init__(self, container: Container) -> None:
        self.container = container

    # -- routes ---------------------------------------------------------------------

    def provision(self, request: Request) -> Response:
        caller = self._caller(request)
        body = _parse(ProvisionBody, _json_body(request), "request body")
        instance = self.container.instances.provision(
            caller,
            ProvisionRequest(
                instance_type=body.instanceType,
                provider=body.provider,
                region=body.region,
                task_id=body.taskId,
                idle_timeout_minutes=body.autoTerminateMinutes,
                metadata=body.metadata,
            ),
        )
        return Response(
            body=self._view(instance),
            status_code=202,
            headers={"Location": f"/api/instances/{instance.id}"},
        )

    def get(self, request: Request, instance_id: str) -> dict[str, Any]:
        caller = self._caller(request)
        return self._view(self.container.instances.get(caller, _checked_id(instance_id)))

    def list(self, request: Request) -> dict[str, Any]:
        caller = self._caller(request)
        params = _parse(ListQueryParams, dict(request.query_params or {}), "query string")
        page = self.container.instances.list(
            caller,
            status=params.status,
            task_id=params.taskId,
            limit=params.limit,
            cursor=params.cursor,
            user_id=params.userId,
        )
        return {"items": [self._view(i) for i in page.items], "nextCursor": page.next_cursor}

    def terminate(self, request: Request, instance_id: str) -> Response:
        caller = self._caller(request)
        instance = self.container.instances.terminate(caller, _checked_id(instance_id))
        return Response(body=self._view(instance), status_code=202)

    def report_activity(self, request: Request, instance_id: str) -> dict[str, Any]:
        caller = self._caller(request)
        body = _parse(ActivityBody, _json_body(request), "request body")
        instance = self.container.instances.report_activity(
            caller, _checked_id(instance_id), body.state
        )
        return self._view(instance)

    def stats(self, request: Request) -> dict[str, Any]:
        caller = self._caller(request)
        if request.query_params:
            raise ValidationError(
                "GET /api/instances/stats takes no query parameters.",
                fields=[{"field": name, "problem": "unknown"} for name in request.query_params],
            )
        stats = self.container.instances.stats(caller)
        return {
            "byStatus": stats.by_status,
            "byProvider": stats.by_provider,
            "total": stats.total,
            "live": stats.live,
            "burnRateUsdPerHour": str(stats.burn_rate_per_hour),
            "totalCostUsd": str(stats.total_cost),
            "alwaysOnCostUsd": str(stats.always_on_cost),
            "savingUsd": str(stats.saving),
            "savingPercent": None if stats.saving_percent is None else str(stats.saving_percent),
            "periodStart": iso(stats.period_start),
            "computedAt": iso(self.container.clock()),
        }

    # -- helpers --------------------------------------------------------------------

    def _caller(self, request: Request) -> Caller:
        return caller_from(
            request.headers or {},
            request.context,
            self.container.settings.accepts_dev_tokens,
        )

    def _view(self, instance: Any) -> dict[str, Any]:
        return instance_view(instance, self.container.clock())


def _checked_id(instance_id: str) -> str:
    # An id that cannot exist answers like an unknown one: nothing to learn from the shape.
    if not _INSTANCE_ID.match(instance_id):
        raise InstanceNotFoundError(f"No instance with id {instance_id!r}.")
    return instance_id


def _json_body(request: Request) -> Any:
    raw = request.raw_body
    if not raw:
        raise ValidationError("The request needs a JSON object body.")
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(
            f"The body is {len(raw)} bytes; at most {MAX_BODY_BYTES} are accepted."
        )
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValidationError(f"The body is not valid JSON: {error}.") from None
    except RecursionError:
        raise ValidationError("The body is nested too deeply to be read.") from None


def _parse(model: type[pydantic.BaseModel], data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise ValidationError(f"The {what} must be a JSON object.")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as error:
        raise validation_error(error, what) from None
