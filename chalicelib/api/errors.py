"""The one place where errors become HTTP answers: RFC 9457 problem documents."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ParamSpec

import pydantic
from chalice.app import Response

from chalicelib.api.contract import PROBLEM_JSON
from chalicelib.api.responses import FieldProblem, Problem
from chalicelib.domain import errors as domain
from chalicelib.providers.base import (
    CloudCapacityError,
    CloudProviderError,
    CloudThrottlingError,
)

logger = logging.getLogger(__name__)
# The parameters of the route a decorator wraps.
P = ParamSpec("P")

PROBLEM_TYPE_PREFIX = "urn:instance-provisioner:problem:"

STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (domain.ValidationError, 400),
    (domain.AuthenticationError, 401),
    (domain.ForbiddenError, 403),
    (domain.LimitReachedError, 403),
    (domain.InstanceNotFoundError, 404),
    (domain.MethodNotAllowedError, 405),
    (domain.InvalidTransitionError, 409),
    (domain.ConcurrentUpdateError, 409),
    (domain.IdempotencyKeyInUseError, 409),
    (domain.IdempotencyKeyReusedError, 422),
    (domain.InstanceFinishedError, 410),
    (domain.PayloadTooLargeError, 413),
    (domain.UnsupportedMediaTypeError, 415),
    (domain.UnsatisfiableRequestError, 422),
    (domain.ProviderUnavailableError, 503),
    (domain.ServiceNotConfiguredError, 503),
    (CloudThrottlingError, 503),
    (CloudCapacityError, 503),
    (CloudProviderError, 502),
    # Last: any other domain error the service raises on purpose (e.g. the workflow
    # could not be started) is a temporary unavailability, not a bug.
    (domain.DomainError, 503),
)


def problem(
    status: int, code: str, detail: str, fields: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None, extensions: dict[str, Any] | None = None,
) -> Response:
    document = Problem(
        type=PROBLEM_TYPE_PREFIX + code,
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        error=code,
        message=detail,
        fields=[FieldProblem(**f) for f in fields] if fields else None,
        **(extensions or {}),  # each one a member of the model (`limit`)
    )
    return Response(
        # Without the members that do not apply (no `fields`, no `limit`, no `allowed`).
        body=document.model_dump(mode="json", exclude_none=True),
        status_code=status,
        headers={"Content-Type": PROBLEM_JSON, **(headers or {})},
    )


def response_for(error: Exception) -> Response:
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            headers: dict[str, str] = {}
            if status == 401:
                agent = isinstance(error, domain.AgentRefusedError)
                headers["WWW-Authenticate"] = "Agent" if agent else "Bearer"
            if isinstance(error, domain.MethodNotAllowedError):
                headers["Allow"] = ", ".join(error.allowed)
            if isinstance(error, CloudThrottlingError | domain.IdempotencyKeyInUseError):
                headers["Retry-After"] = "5"
            return problem(
                status, getattr(error, "code", "error"), str(error),
                getattr(error, "fields", None), headers, getattr(error, "extensions", None),
            )
    logger.error("unhandled error", exc_info=error)
    return problem(
        500, "internal_error", "The service failed to handle this request; it has been logged."
    )


def validation_fields(
    error: pydantic.ValidationError, model: type[pydantic.BaseModel]
) -> list[dict[str, Any]]:
    fields = []
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"]) or "(body)"
        # pydantic prefixes our own validators' messages with "Value error, ".
        entry = {"field": location, "problem": item["msg"].removeprefix("Value error, ")}
        if item["type"] == "extra_forbidden" and len(item["loc"]) == 1:
            known = ", ".join(model.model_fields) or "none"
            entry = {"field": location, "problem": "unknown field", "allowed": known}
        fields.append(entry)
    return fields


def validation_error(
    error: pydantic.ValidationError, model: type[pydantic.BaseModel], what: str
) -> domain.ValidationError:
    fields = validation_fields(error, model)
    summary = "; ".join(
        f"{f['field']}: {f['problem']}" + (f" (allowed: {f['allowed']})" if "allowed" in f else "")
        for f in fields
    )
    return domain.ValidationError(f"Invalid {what}: {summary}", fields)


def json_errors(view: Callable[P, object]) -> Callable[P, Response]:
    """Wrap a route so every answer is JSON with its Content-Type, and every failure a
    problem document, never a stack trace."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            answer = view(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - mapped (or logged as 500) right here
            return response_for(error)
        if not isinstance(answer, Response):
            answer = Response(body=answer, headers={"Content-Type": "application/json"})
        answer.headers.setdefault("Content-Type", "application/json")
        return answer

    return wrapper
