"""Chalice wiring: HTTP routes, the lifecycle workflow's step functions and the reaper tick."""

from __future__ import annotations

import re
from typing import Any

from chalice.app import Chalice, Rate, Request

from chalicelib import bootstrap, logs, metrics
from chalicelib.api.contract import OPERATIONS, allowed_methods, chalice_route
from chalicelib.api.endpoints import Endpoints
from chalicelib.api.errors import json_errors
from chalicelib.cognito import CognitoAuthorizer
from chalicelib.services.release import ReleaseState
from chalicelib.services.steps import WorkflowState

app = Chalice(app_name="instance-provisioner")
# Deployed, every log line is one JSON document with the stage and the function; each
# invocation adds its instance, user and execution where it knows them.
logs.configure_for_lambda()
app.register_middleware(logs.bind_invocation_keys, "all")


def endpoints() -> Endpoints:
    return Endpoints(bootstrap.container())


def current_request() -> Request:
    """The request a route is handling (Chalice sets it before calling the route)."""
    request = app.current_request
    assert request is not None, "a route runs only with a current request"
    return request


# -- HTTP API ---------------------------------------------------------------------------


# Every body is read as JSON by the endpoint itself, which answers 415 for other media
# types with a problem document (Chalice's own check would answer in its own format).
ANY_MEDIA_TYPE = ["*/*"]

# Deployed stages: API Gateway lets through only requests carrying a valid token of the
# Cognito user pool (its ARN is a template parameter); the local stage reads dev tokens.
cognito = CognitoAuthorizer()
# Paths without a Cognito token: the OpenAPI document, and the agent routes (which check the
# instance's agent secret themselves).
PUBLIC_PATHS = frozenset({
    "/api/openapi.json",
    "/api/agent/instances/{instance_id}/ready",
    "/api/agent/instances/{instance_id}/heartbeat",
})


@app.route(
    "/api/instances", methods=["POST"], content_types=ANY_MEDIA_TYPE, authorizer=cognito
)
@json_errors
def provision_instance() -> Any:
    return endpoints().provision(current_request())


@app.route("/api/instances", methods=["GET"], authorizer=cognito)
@json_errors
def list_instances() -> Any:
    return endpoints().list(current_request())


@app.route("/api/instances/stats", methods=["GET"], authorizer=cognito)
@json_errors
def instance_stats() -> Any:
    return endpoints().stats(current_request())


@app.route("/api/costs", methods=["GET"], authorizer=cognito)
@json_errors
def cost_report() -> Any:
    return endpoints().costs(current_request())


@app.route("/api/users/{user_id}/limits", methods=["GET"], authorizer=cognito)
@json_errors
def get_user_limits(user_id: str) -> Any:
    return endpoints().user_limits(current_request(), user_id)


@app.route(
    "/api/users/{user_id}/limits", methods=["PUT"], content_types=ANY_MEDIA_TYPE,
    authorizer=cognito,
)
@json_errors
def set_user_limits(user_id: str) -> Any:
    return endpoints().set_user_limits(current_request(), user_id)


@app.route("/api/instances/{instance_id}", methods=["GET"], authorizer=cognito)
@json_errors
def get_instance(instance_id: str) -> Any:
    return endpoints().get(current_request(), instance_id)


@app.route("/api/instances/{instance_id}", methods=["DELETE"], authorizer=cognito)
@json_errors
def terminate_instance(instance_id: str) -> Any:
    return endpoints().terminate(current_request(), instance_id)


@app.route(
    "/api/instances/{instance_id}", methods=["PATCH"], content_types=ANY_MEDIA_TYPE,
    authorizer=cognito,
)
@json_errors
def update_instance_limits(instance_id: str) -> Any:
    return endpoints().update_limits(current_request(), instance_id)


@app.route(
    "/api/instances/{instance_id}/activity",
    methods=["POST"],
    content_types=ANY_MEDIA_TYPE,
    authorizer=cognito,
)
@json_errors
def report_instance_activity(instance_id: str) -> Any:
    return endpoints().report_activity(current_request(), instance_id)


# The agent on each machine: no Cognito token, the instance's own agent secret instead.
@app.route(
    "/api/agent/instances/{instance_id}/ready", methods=["POST"], content_types=ANY_MEDIA_TYPE
)
@json_errors
def agent_ready(instance_id: str) -> Any:
    return endpoints().agent_ready(current_request(), instance_id)


@app.route(
    "/api/agent/instances/{instance_id}/heartbeat", methods=["POST"],
    content_types=ANY_MEDIA_TYPE,
)
@json_errors
def agent_heartbeat(instance_id: str) -> Any:
    return endpoints().agent_heartbeat(current_request(), instance_id)


@app.route("/api/instance-types", methods=["GET"], authorizer=cognito)
@json_errors
def list_instance_types() -> Any:
    return endpoints().instance_types(current_request())


@app.route("/api/openapi.json", methods=["GET"])
@json_errors
def openapi_document() -> Any:
    return endpoints().openapi(current_request())


def _refuse_other_methods(contract_path: str) -> None:
    """Answer 405 with an Allow header for the methods a path does not support."""

    @json_errors
    def refuse(**_: Any) -> Any:
        return Endpoints.method_not_allowed(current_request(), contract_path)

    implemented = allowed_methods(contract_path)
    every = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
    others = [m for m in every if m not in implemented]
    chalice_path = chalice_route(contract_path)
    name = "refuse_" + re.sub(r"\W+", "_", chalice_path).strip("_")
    authorizer = None if chalice_path in PUBLIC_PATHS else cognito
    app.route(
        chalice_path, methods=others, name=name, content_types=ANY_MEDIA_TYPE,
        authorizer=authorizer,
    )(refuse)


for _path in sorted({op.path for op in OPERATIONS}):
    _refuse_other_methods(_path)


# -- lifecycle workflow steps (Task states of chalicelib/workflow/lifecycle.asl.json) ----


@app.lambda_function(name="launch_instance")
def launch_instance(event: WorkflowState, context: Any) -> WorkflowState:
    return bootstrap.container().steps.launch(event)


@app.lambda_function(name="check_instance_running")
def check_instance_running(event: WorkflowState, context: Any) -> WorkflowState:
    return bootstrap.container().steps.check_running(event)


@app.lambda_function(name="mark_instance_configuring")
def mark_instance_configuring(event: WorkflowState, context: Any) -> WorkflowState:
    return bootstrap.container().steps.mark_configuring(event)


@app.lambda_function(name="check_instance_status")
def check_instance_status(event: WorkflowState, context: Any) -> WorkflowState:
    return bootstrap.container().steps.check_status(event)


@app.lambda_function(name="check_instance_agent")
def check_instance_agent(event: WorkflowState, context: Any) -> WorkflowState:
    return bootstrap.container().steps.check_agent(event)


@app.lambda_function(name="mark_instance_ready")
def mark_instance_ready(event: WorkflowState, context: Any) -> WorkflowState:
    return bootstrap.container().steps.mark_ready(event)


@app.lambda_function(name="record_instance_error")
def record_instance_error(event: WorkflowState, context: Any) -> WorkflowState:
    return bootstrap.container().steps.record_error(event)


# -- release workflow step (chalicelib/workflow/release.asl.json) --------------------------


@app.lambda_function(name="release_instance")
def release_instance(event: ReleaseState, context: Any) -> ReleaseState:
    return bootstrap.container().release_steps.release(event)


# -- scheduled tick ---------------------------------------------------------------------


@app.schedule(Rate(1, unit=Rate.MINUTES), name="reaper")
def reaper(event: Any) -> dict[str, Any]:
    container = bootstrap.container()
    now = container.clock()
    report = container.reaper.tick(now)
    metrics.emit(metrics.tick_records(report, container.settings.stage, now))
    return report.as_dict()
