"""Chalice wiring: HTTP routes, the lifecycle workflow's step functions and the reaper tick."""

from __future__ import annotations

import re
from typing import Any

from chalice import Chalice, Rate

from chalicelib import bootstrap, metrics
from chalicelib.api.contract import OPERATIONS, allowed_methods, chalice_route
from chalicelib.api.endpoints import Endpoints
from chalicelib.api.errors import json_errors
from chalicelib.cognito import CognitoAuthorizer

app = Chalice(app_name="instance-provisioner")


def endpoints() -> Endpoints:
    return Endpoints(bootstrap.container())


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
    return endpoints().provision(app.current_request)


@app.route("/api/instances", methods=["GET"], authorizer=cognito)
@json_errors
def list_instances() -> Any:
    return endpoints().list(app.current_request)


@app.route("/api/instances/stats", methods=["GET"], authorizer=cognito)
@json_errors
def instance_stats() -> Any:
    return endpoints().stats(app.current_request)


@app.route("/api/costs", methods=["GET"], authorizer=cognito)
@json_errors
def cost_report() -> Any:
    return endpoints().costs(app.current_request)


@app.route("/api/instances/{instance_id}", methods=["GET"], authorizer=cognito)
@json_errors
def get_instance(instance_id: str) -> Any:
    return endpoints().get(app.current_request, instance_id)


@app.route("/api/instances/{instance_id}", methods=["DELETE"], authorizer=cognito)
@json_errors
def terminate_instance(instance_id: str) -> Any:
    return endpoints().terminate(app.current_request, instance_id)


@app.route(
    "/api/instances/{instance_id}", methods=["PATCH"], content_types=ANY_MEDIA_TYPE,
    authorizer=cognito,
)
@json_errors
def update_instance_limits(instance_id: str) -> Any:
    return endpoints().update_limits(app.current_request, instance_id)


@app.route(
    "/api/instances/{instance_id}/activity",
    methods=["POST"],
    content_types=ANY_MEDIA_TYPE,
    authorizer=cognito,
)
@json_errors
def report_instance_activity(instance_id: str) -> Any:
    return endpoints().report_activity(app.current_request, instance_id)


# The agent on each machine: no Cognito token, the instance's own agent secret instead.
@app.route(
    "/api/agent/instances/{instance_id}/ready", methods=["POST"], content_types=ANY_MEDIA_TYPE
)
@json_errors
def agent_ready(instance_id: str) -> Any:
    return endpoints().agent_ready(app.current_request, instance_id)


@app.route(
    "/api/agent/instances/{instance_id}/heartbeat", methods=["POST"],
    content_types=ANY_MEDIA_TYPE,
)
@json_errors
def agent_heartbeat(instance_id: str) -> Any:
    return endpoints().agent_heartbeat(app.current_request, instance_id)


@app.route("/api/instance-types", methods=["GET"], authorizer=cognito)
@json_errors
def list_instance_types() -> Any:
    return endpoints().instance_types(app.current_request)


@app.route("/api/openapi.json", methods=["GET"])
@json_errors
def openapi_document() -> Any:
    return endpoints().openapi(app.current_request)


def _refuse_other_methods(contract_path: str) -> None:
    """Answer 405 with an Allow header for the methods a path does not support."""

    @json_errors
    def refuse(**_: Any) -> Any:
        return Endpoints.method_not_allowed(app.current_request, contract_path)

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
def launch_instance(event: dict, context: Any) -> dict:
    return bootstrap.container().steps.launch(event)


@app.lambda_function(name="check_instance_running")
def check_instance_running(event: dict, context: Any) -> dict:
    return bootstrap.container().steps.check_running(event)


@app.lambda_function(name="mark_instance_configuring")
def mark_instance_configuring(event: dict, context: Any) -> dict:
    return bootstrap.container().steps.mark_configuring(event)


@app.lambda_function(name="check_instance_status")
def check_instance_status(event: dict, context: Any) -> dict:
    return bootstrap.container().steps.check_status(event)


@app.lambda_function(name="check_instance_agent")
def check_instance_agent(event: dict, context: Any) -> dict:
    return bootstrap.container().steps.check_agent(event)


@app.lambda_function(name="mark_instance_ready")
def mark_instance_ready(event: dict, context: Any) -> dict:
    return bootstrap.container().steps.mark_ready(event)


@app.lambda_function(name="record_instance_error")
def record_instance_error(event: dict, context: Any) -> dict:
    return bootstrap.container().steps.record_error(event)


# -- release workflow step (chalicelib/workflow/release.asl.json) --------------------------


@app.lambda_function(name="release_instance")
def release_instance(event: dict, context: Any) -> dict:
    return dict(bootstrap.container().release_steps.release(event))


# -- scheduled tick ---------------------------------------------------------------------


@app.schedule(Rate(1, unit=Rate.MINUTES), name="reaper")
def reaper(event: Any) -> dict:
    container = bootstrap.container()
    now = container.clock()
    report = container.reaper.tick(now)
    metrics.emit(metrics.tick_records(report, container.settings.stage, now))
    return report.as_dict()
