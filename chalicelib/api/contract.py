"""The API contract: every operation, its inputs and its answers, in one table; the OpenAPI
3.1 document is generated from it and from the pydantic models it names."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib.api import requests, responses
from chalicelib.domain.ids import INSTANCE_ID_PATTERN, USER_ID_PATTERN
from chalicelib.services import views

PROBLEM_JSON = "application/problem+json"
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Bad input: the problem document says which field and what is allowed.",
    401: "No bearer token, or one this stage does not accept (agent routes: not this "
    "instance's agent secret).",
    410: "The instance is finished; its agent should stop the machine.",
    403: "Not allowed: setting limits is for operators; or a new instance would pass one of "
    "the user's limits (`quota_exceeded`) or a spent monthly budget refuses it "
    "(`budget_exhausted`): `limit` names the limit, its value and the usage; nothing was "
    "created.",
    404: "No such instance, or one that belongs to someone else.",
    405: "The path does not support this method; `Allow` lists those it does.",
    409: "The instance's current state does not allow this change, or a request with the "
    "same Idempotency-Key is still being handled (retry after `Retry-After` seconds).",
    413: "The body is larger than 64 KiB.",
    415: "The body is not JSON (send Content-Type: application/json).",
    422: "A well-formed request that cannot be satisfied (e.g. no type meets a requirement, "
    "or an Idempotency-Key already used for another body).",
    500: "A failure of the service itself; it is logged.",
    502: "The cloud provider answered with an error.",
    503: "A cloud provider or the workflow is unavailable or not configured; retry later.",
}
COMMON_ERRORS = (401, 405, 500)
PATH_PATTERNS = {"instanceId": INSTANCE_ID_PATTERN, "userId": USER_ID_PATTERN}


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str  # OpenAPI template, e.g. /api/instances/{instanceId}
    summary: str
    success: int
    response: type[BaseModel] | None
    errors: tuple[int, ...] = ()
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    authenticated: bool = True
    # The credential: "bearer" (a user's token) or "agent" (an instance's agent secret).
    security: str = "bearer"
    description: str = ""
    success_headers: dict[str, str] = field(default_factory=dict)
    # Request headers the operation reads: name -> (description, JSON schema).
    request_headers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # The answer is also available as text/csv (asked for with `Accept: text/csv`).
    csv: bool = False

    @property
    def path_parameters(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


INSTANCE = "/api/instances/{instanceId}"
AGENT = "/api/agent/instances/{instanceId}"

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "provisionInstance", "POST", "/api/instances", "Provision an instance",
        202, responses.ProvisionedInstance, (400, 409, 413, 415, 422, 503),
        query=requests.NoQuery, body=requests.ProvisionBody,
        description=(
            "Writes the record in PROVISIONING and starts the lifecycle workflow; poll the "
            "record (or listen to the events) until it is READY. Name a type with "
            "`instanceType`, or give a requirement (`gpu`, `gpuCount`, `provider`) and the "
            "cheapest matching type in the catalog is chosen."
        ),
        success_headers={
            "Location": "The URL of the new instance record",
            "Idempotent-Replayed": "`true` when the answer repeats an earlier request's",
        },
        request_headers={
            "Idempotency-Key": (
                "Makes the request safe to retry: the same user, key and body within 24 "
                "hours answer with the same record (its current state) and start nothing; "
                "the same key with another body answers 422 `idempotency_key_reused`; while "
                "the first request runs, a repeat answers 409 `idempotency_key_in_use`. "
                "Another user's key is unrelated.",
                {"type": "string", "minLength": 1, "maxLength": 128,
                 "pattern": "^[\\x21-\\x7e]{1,128}$"},
            )
        },
    ),
    Operation(
        "listInstances", "GET", "/api/instances", "List your instances, newest first",
        200, responses.InstancePage, (400,), query=requests.ListQueryParams,
        description=(
            "Newest first, paged by an opaque cursor bound to the caller and the filters. "
            "An operator without userId or taskId walks every user's records in storage "
            "order instead."
        ),
    ),
    Operation(
        "instanceStats", "GET", "/api/instances/stats", "Fleet figures: counts, burn, saving",
        200, responses.FleetStats, (400,), query=requests.NoQuery,
    ),
    Operation(
        "costReport", "GET", "/api/costs", "What was billed in a window, grouped",
        200, responses.CostReport, (400,), query=requests.CostQuery, csv=True,
        description=(
            "Counts the seconds each instance was billed inside [from, to) under its "
            "provider's rule (an instance straddling the window counts only its part; with "
            "groupBy=day an instance is split across the UTC days), and their cost. A user "
            "sees their own; an operator everyone's, or one user's with `userId`. "
            "`Accept: text/csv` answers the same as CSV (a row per group, then a `total` "
            "row). The window spans at most 92 days."
        ),
    ),
    Operation(
        "getInstance", "GET", INSTANCE, "Read an instance, with its cost up to now",
        200, views.InstanceRecord, (400, 404), query=requests.NoQuery,
    ),
    Operation(
        "terminateInstance", "DELETE", INSTANCE, "Stop an instance (idempotent)",
        202, views.InstanceRecord, (400, 404, 409), query=requests.NoQuery,
        description=(
            "A live instance goes to STOPPING and a release workflow asks the cloud at once "
            "to terminate its machine (billing ends when the cloud accepts); TERMINATED is "
            "recorded when the cloud confirms the machine gone, within seconds. The reaper's "
            "tick is the safety net. A repeat answers the record unchanged."
        ),
    ),
    Operation(
        "updateInstanceLimits", "PATCH", INSTANCE, "Change a live instance's limits",
        200, views.InstanceRecord, (400, 404, 409, 413, 415), query=requests.NoQuery,
        body=requests.LimitsBody,
        description=(
            "`autoTerminateMinutes` (5-120, counted from the last activity) and "
            "`maxLifetimeMinutes` (10-10080, counted from the instance's creation, never "
            "below the time it has already lived). Only a live instance that is not "
            "stopping has limits; any other answers 409."
        ),
    ),
    Operation(
        "reportActivity", "POST", INSTANCE + "/activity", "Report a task running or idle",
        200, views.InstanceRecord, (400, 404, 409, 413, 415), query=requests.NoQuery,
        body=requests.ActivityBody,
        description=(
            "`running` moves READY to RUNNING, `idle` moves RUNNING to READY; either restarts "
            "the idle clock (a running task repeats `running` as a heartbeat)."
        ),
    ),
    Operation(
        "getUserLimits", "GET", "/api/users/{userId}/limits", "A user's quotas, budget and usage",
        200, responses.UserLimits, (400, 403), query=requests.NoQuery,
        description=(
            "The user's limits (their own, or the deployment's defaults) and the usage held "
            "against each: live instances and GPUs, the burn rate, and the month-to-date "
            "spend (UTC calendar month, live instances counted to now). The user or an "
            "operator."
        ),
    ),
    Operation(
        "setUserLimits", "PUT", "/api/users/{userId}/limits", "Set a user's quotas and budget",
        200, responses.UserLimits, (400, 403, 413, 415), query=requests.NoQuery,
        body=requests.UserLimitsBody,
        description=(
            "Operators only. Replaces the user's own limits: a field left out takes the "
            "deployment's default, a null means no limit. A POST /api/instances that would "
            "pass a limit answers 403 `quota_exceeded`; a spent budget whose action is "
            "`refuse` or `stop` answers 403 `budget_exhausted`, and `stop` also stops the "
            "user's live instances (reason `budget_exhausted`) at the reaper's next tick."
        ),
    ),
    Operation(
        "listInstanceTypes", "GET", "/api/instance-types", "The catalog, with prices",
        200, responses.InstanceTypeList, (400,), query=requests.InstanceTypesQuery,
    ),
    Operation(
        "reportAgentReady", "POST", AGENT + "/ready", "The agent's boot report of the GPUs",
        200, responses.AgentInstructions, (400, 410, 413, 415), query=requests.NoQuery,
        body=requests.AgentReadyBody,
        security="agent",
        description=(
            "Called by the agent on the machine at boot with what `nvidia-smi` found. The "
            "lifecycle workflow moves the instance to READY only once this report matches "
            "the catalog's GPUs (model and count), and to ERROR `gpu_check_failed` if not. "
            "A repeated report is ignored. See docs/agent.md."
        ),
    ),
    Operation(
        "reportAgentHeartbeat", "POST", AGENT + "/heartbeat", "The agent's GPU heartbeat",
        200, responses.AgentInstructions, (400, 410, 413, 415), query=requests.NoQuery,
        body=requests.AgentHeartbeatBody,
        security="agent",
        description=(
            "Per-GPU utilization, memory and processes, every `heartbeatSeconds`. A GPU "
            "above IDLE_GPU_UTILIZATION_PERCENT or with a process is evidence of activity: "
            "the idle clock starts again. The answer tells the agent its dead-man delay, "
            "the lifetime deadline, and whether to stop the machine."
        ),
    ),
    Operation(
        "openapi", "GET", "/api/openapi.json", "This document", 200, None, (400,),
        query=requests.NoQuery, authenticated=False,
    ),
)


def operation(operation_id: str) -> Operation:
    return next(op for op in OPERATIONS if op.operation_id == operation_id)


def chalice_route(path: str) -> str:
    """The Chalice route of a contract path (Chalice names the id parameter instance_id)."""
    return path.replace("{instanceId}", "{instance_id}").replace("{userId}", "{user_id}")


def allowed_methods(path: str) -> list[str]:
    return sorted(op.method for op in OPERATIONS if op.path == path)


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API."""
    models: list[type[BaseModel]] = [responses.Problem]
    for op in OPERATIONS:
        models += [m for m in (op.response, op.body, op.query) if m is not None]
    unique = list(dict.fromkeys(models))
    _, top = models_json_schema(
        [(m, "validation" if _is_request(m) else "serialization") for m in unique],
        ref_template="#/components/schemas/{model}",
    )
    schemas = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation_object(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Instance Provisioner",
            "version": "1.0.0",
            "description": (
                "Provision on-demand GPU instances on AWS and Azure, follow them through "
                "their lifecycle, see their cost to the second, and stop them. Errors are "
                "RFC 9457 problem documents."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {
                name: schema for name, schema in sorted(schemas.items())
                if not _is_query_model_name(name)
            },
            "securitySchemes": {
                "agent": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": (
                        "`Agent <secret>`: the per-instance secret the agent on the machine "
                        "received in its user data. It opens that instance's agent routes and "
                        "nothing else; the service keeps only its hash."
                    ),
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "Deployed stages: a Cognito user-pool token (the user is its `sub`). "
                        "The local stage: `dev:<user-id>`, or `dev:<user-id>:admin` for an "
                        "operator who sees every user's instances."
                    ),
                }
            },
        },
    }


def _is_request(model: type[BaseModel]) -> bool:
    return model.__module__ == requests.__name__


def _is_query_model_name(name: str) -> bool:
    return name in {"ListQueryParams", "InstanceTypesQuery", "NoQuery", "CostQuery"}


def _operation_object(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "pattern": PATH_PATTERNS[name]}}
        for name in op.path_parameters
    ]
    parameters += [
        {"name": name, "in": "header", "required": False, "description": text, "schema": schema}
        for name, (text, schema) in op.request_headers.items()
    ]
    if op.query is not None:
        query_schema = schemas[op.query.__name__]
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            parameters.append({
                "name": name, "in": "query", "required": name in required,
                "schema": _without_null(prop),
            })
    success: dict[str, Any] = {"description": op.summary}
    if op.response is not None:
        success["content"] = {"application/json": {"schema": _ref(op.response)}}
        if op.csv:
            success["content"]["text/csv"] = {"schema": {"type": "string"}}
    else:
        success["content"] = {"application/json": {"schema": {"type": "object"}}}
    if op.success_headers:
        success["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in op.success_headers.items()
        }
    answers: dict[str, Any] = {str(op.success): success}
    codes = sorted(set(op.errors) | (set(COMMON_ERRORS) if op.authenticated else {405, 500}))
    for code in codes:
        answers[str(code)] = {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {PROBLEM_JSON: {"schema": _ref(responses.Problem)}},
        }
    result: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "parameters": parameters,
        "responses": answers,
        "security": [{op.security: []}] if op.authenticated else [],
    }
    if op.description:
        result["description"] = op.description
    if op.body is not None:
        result["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": _ref(op.body)}},
        }
    return result


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Query parameters are absent rather than null: drop pydantic's `null` branch."""
    branches = schema.get("anyOf")
    if branches:
        kept = [b for b in branches if b.get("type") != "null"]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
            return {**kept[0], **rest}
    return {k: v for k, v in schema.items() if not (k == "default" and v is None)}
