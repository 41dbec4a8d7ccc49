"""Logging: the loggers that say what happened (each transition, each action that changed
something), the keys an invocation binds to every line it logs (instance, user, execution),
and the deployed stages' JSON lines (AWS Lambda Powertools Logger).

Lines name their facts in `extra` fields, so a deployed stage's JSON carries them as keys
and `make run`'s console (local/console.py) formats them, neither parsing a message."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import IO, Any

SERVICE = "instance-provisioner"
# One INFO line per status change of a record: fields instance_id, user_id, instance_type,
# from_status (None for a new record), to_status, reason, execution_id.
TRANSITIONS = logging.getLogger("chalicelib.transitions")
# One INFO line per action that changed something without a status change (a terminate
# sent, a warning of expiry, billing resumed): fields action, instance_id, detail.
ACTIONS = logging.getLogger("chalicelib.actions")

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Library loggers that speak at INFO about every call (credentials found, each Azure HTTP
# request and response with its headers): WARNING and up only, unless LOG_LEVEL=DEBUG.
CHATTY_LIBRARIES = (
    "botocore.credentials",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.identity",
    "responses",
)

# What an invocation knows about itself, added to every record it logs (a record's own
# `extra` wins over it).
_bound: ContextVar[Mapping[str, str]] = ContextVar("bound_log_keys", default=MappingProxyType({}))


@contextmanager
def bound(**keys: str | None) -> Iterator[None]:
    """Within the block, every log record carries these keys (None values are left out)."""
    token = _bound.set({**_bound.get(), **{k: v for k, v in keys.items() if v}})
    try:
        yield
    finally:
        _bound.reset(token)


def bound_keys() -> Mapping[str, str]:
    return _bound.get()


class BoundKeys(logging.Filter):
    """Adds the keys bound by `bound` to each record the handler it filters writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _bound.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def transition(
    instance_id: str, user_id: str, instance_type: str, from_status: str | None,
    to_status: str, reason: str | None, execution_id: str | None,
) -> None:
    TRANSITIONS.info(
        "%s %s -> %s%s", instance_id, from_status or "(new)", to_status,
        f" ({reason})" if reason else "",
        extra={
            "instance_id": instance_id, "user_id": user_id, "instance_type": instance_type,
            "from_status": from_status, "to_status": to_status, "reason": reason,
            "execution_id": execution_id,
        },
    )


def action(action: str, instance_id: str, detail: str = "") -> None:
    ACTIONS.info(
        "%s %s%s", instance_id, action, f": {detail}" if detail else "",
        extra={"action": action, "instance_id": instance_id, "detail": detail or None},
    )


def configure_for_lambda() -> None:
    """In a Lambda function (deployed stages), JSON lines; elsewhere nothing changes."""
    from chalicelib.settings import DEFAULT_STAGE

    if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
        configure_json(
            os.environ.get("STAGE", DEFAULT_STAGE), os.environ.get("LOG_LEVEL", "INFO")
        )


def configure_json(stage: str, level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Every line of the process as one JSON document: Powertools Logger's formatter on the
    root logger's one handler, so the service's loggers, Chalice's and the libraries' all
    write the same shape, with the stage, the function and the keys the invocation bound."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    formatter = LambdaPowertoolsFormatter(utc=True)
    formatter.append_keys(
        service=SERVICE, stage=stage, function=os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(BoundKeys())
    root = logging.getLogger()
    for existing in list(root.handlers):  # the Lambda runtime's plain-text handler
        root.removeHandler(existing)
    root.addHandler(handler)
    if level.upper() not in LEVELS:
        root.setLevel(logging.INFO)
        root.warning("LOG_LEVEL must be one of %s, got %r: logging at INFO", ", ".join(LEVELS),
                     level)
    else:
        root.setLevel(level.upper())
    # Chalice's app.log (named after the app) has a plain-text handler of its own: it goes,
    # and its lines reach the root's.
    chalice_log = logging.getLogger(SERVICE)
    for existing in list(chalice_log.handlers):
        chalice_log.removeHandler(existing)
    chalice_log.propagate = True
    quiet_libraries(level)


def quiet_libraries(level: str) -> None:
    """The chatty libraries at WARNING; at DEBUG their INFO lines too (not their own DEBUG
    lines: botocore's would print every request's wire dump)."""
    shown = logging.INFO if level.upper() == "DEBUG" else logging.WARNING
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(shown)


def bind_invocation_keys(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice middleware (every event type): the invocation's lines carry its keys."""
    with bound(**invocation_keys(event)):
        return get_response(event)


def invocation_keys(event: Any) -> dict[str, str | None]:
    """The instance of a request's path or of a step's input, the user of the request's
    verified Cognito claims, the workflow execution a step runs in, the Lambda request id."""
    from chalice.app import Request

    if isinstance(event, Request):
        authorizer = (event.context or {}).get("authorizer") or {}
        claims = authorizer.get("claims") or {}
        instance_id = (event.uri_params or {}).get("instance_id")
        return {
            "instance_id": instance_id,
            "user_id": str(claims["sub"]) if claims.get("sub") else None,
            "request_id": getattr(event.lambda_context, "aws_request_id", None),
        }
    payload = event.to_dict() if hasattr(event, "to_dict") else {}
    context = getattr(event, "context", None)
    instance_id = payload.get("instanceId") if isinstance(payload, Mapping) else None
    function = getattr(context, "function_name", None) or os.environ.get(
        "AWS_LAMBDA_FUNCTION_NAME", ""
    )
    return {
        "instance_id": str(instance_id) if instance_id else None,
        "execution_id": _execution_of(function, str(instance_id)) if instance_id else None,
        "request_id": getattr(context, "aws_request_id", None),
    }


def _execution_of(function: str, instance_id: str) -> str | None:
    """The execution a workflow step of this instance runs in (Chalice names a function
    <app>-<stage>-<handler>; a step's execution is named after its instance)."""
    from chalicelib import bootstrap
    from chalicelib.services.release import release_execution_name
    from chalicelib.workflow.stepfunctions import LIFECYCLE, RELEASE, execution_arn

    handler = function.rsplit("-", 1)[-1]
    settings = bootstrap.container().settings
    if handler in RELEASE.task_functions.values() and settings.release_state_machine_arn:
        return execution_arn(
            settings.release_state_machine_arn, release_execution_name(instance_id)
        )
    if handler in LIFECYCLE.task_functions.values() and settings.state_machine_arn:
        return execution_arn(settings.state_machine_arn, instance_id)
    return None
