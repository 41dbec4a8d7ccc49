"""The one place where errors become HTTP responses with a JSON body."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import pydantic
from chalice import Response

from chalicelib.domain import errors as domain
from chalicelib.providers.base import (
    CloudCapacityError,
    CloudProviderError,
    CloudThrottlingError,
)
from chalicelib.services.instances import WorkflowStartError

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (domain.ValidationError, 400),
    (domain.AuthenticationError, 401),
    (domain.PayloadTooLargeError, 413),
    (domain.InstanceNotFoundError, 404),
    (domain.InvalidTransitionError, 409),
    (domain.ConcurrentUpdateError, 409),
    (domain.ProviderUnavailableError, 503),
    (domain.ServiceNotConfiguredError, 503),
    (WorkflowStartError, 503),
    (CloudThrottlingError, 503),
    (CloudCapacityError, 503),
    (CloudProviderError, 502),
)


def error_response(
    status: int, code: str, message: str, fields: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    return Response(body=body, status_code=status, headers=headers or {})


def response_for(error: Exception) -> Response:
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            code = getattr(error, "code", "service_unavailable")
            headers = {}
            if status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            if isinstance(error, CloudThrottlingError):
                headers["Retry-After"] = "5"
            return error_response(
                status, code, str(error), getattr(error, "fields", None), headers
            )
    logger.exception("unhandled error", exc_info=error)
    return error_response(
        500, "internal_error", "The service failed to handle this request; it has been logged."
    )


def validation_fields(error: pydantic.ValidationError) -> list[dict[str, Any]]:
    fields = []
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"]) or "(body)"
        fields.append({"field": location, "problem": item["msg"]})
    return fields


def validation_error(error: pydantic.ValidationError, what: str) -> domain.ValidationError:
    fields = validation_fields(error)
    summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
    return domain.ValidationError(f"Invalid {what}: {summary}", fields)


def json_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a route so every failure answers with a JSON error body, never a stack trace."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - mapped (or logged as 500) right here
            return response_for(error)

    return wrapper
