"""Chalice wiring: HTTP routes, the lifecycle workflow's step functions and the reaper tick."""

from __future__ import annotations

from typing import Any

from chalice import Chalice, Rate

from chalicelib import bootstrap
from chalicelib.api.endpoints import Endpoints
from chalicelib.api.errors import json_errors

app = Chalice(app_name="instance-provisioner")


def endpoints() -> Endpoints:
    return Endpoints(bootstrap.container())


# -- HTTP API ---------------------------------------------------------------------------


@app.route("/api/instances", methods=["POST"])
@json_errors
def provision_instance() -> Any:
    return endpoints().provision(app.current_request)


@app.route("/api/instances", methods=["GET"])
@json_errors
def list_instances() -> Any:
    return endpoints().list(app.current_request)


@app.route("/api/instances/stats", methods=["GET"])
@json_errors
def instance_stats() -> Any:
    return endpoints().stats(app.current_request)


@app.route("/api/instances/{instance_id}", methods=["GET"])
@json_errors
def get_instance(instance_id: str) -> Any:
    return endpoints().get(app.current_request, instance_id)


@app.route("/api/instances/{instance_id}", methods=["DELETE"])
@json_errors
def terminate_instance(instance_id: str) -> Any:
    return endpoints().terminate(app.current_request, instance_id)


@app.route("/api/instances/{instance_id}/activity", methods=["POST"])
@json_errors
def report_instance_activity(instance_id: str) -> Any:
    return endpoints().report_activity(app.current_request, instance_id)


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


@app.lambda_function(name="mark_instance_ready")
def mark_instance_ready(event: dict, context: Any) -> dict:
    return bootstrap.container().steps.mark_ready(event)


@app.lambda_function(name="record_instance_error")
def record_instance_error(event: dict, context: Any) -> dict:
    return bootstrap.container().steps.record_error(event)


# -- scheduled tick ---------------------------------------------------------------------


@app.schedule(Rate(1, unit=Rate.MINUTES), name="reaper")
def reaper(event: Any) -> dict:
    container = bootstrap.container()
    return container.reaper.tick(container.clock()).as_dict()
