"""Deployed stages log JSON lines (Powertools Logger) carrying the stage, the function and
what the invocation knows: the instance, the user, the workflow execution."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest
from chalice.app import Request

from chalicelib import logs

FUNCTION = "instance-provisioner-prod-record_instance_error"


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[dict]]]:
    """Logging as a deployed function configures it, into a buffer; restored afterwards."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
    touched = [logging.getLogger(), logging.getLogger(logs.SERVICE)] + [
        logging.getLogger(name) for name in logs.CHATTY_LIBRARIES
    ]
    saved = [(log, list(log.handlers), log.level, log.propagate) for log in touched]
    stream = io.StringIO()
    logs.configure_json("prod", "INFO", stream=stream)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        for log, handlers, level, propagate in saved:
            for handler in list(log.handlers):
                log.removeHandler(handler)
            for handler in handlers:
                log.addHandler(handler)
            log.setLevel(level)
            log.propagate = propagate


def test_a_transition_line_is_json_with_stage_function_instance_user_and_execution(
    api, aws, json_lines
):
    instance = api.provision(user="alice")

    [line] = [
        entry for entry in json_lines() if entry.get("to_status") == "PROVISIONING"
    ]
    assert line["stage"] == "prod"
    assert line["function"] == FUNCTION
    assert line["instance_id"] == instance["id"]
    assert line["user_id"] == "alice"
    assert line["execution_id"] == instance["executionId"]
    assert line["level"] == "INFO"
    assert line["service"] == logs.SERVICE


def test_a_step_handlers_own_line_carries_the_instance_and_execution_it_runs_for(
    api, aws, json_lines
):
    instance = api.provision()
    aws.wait_for_workflows()

    api.client.lambda_.invoke(
        "record_instance_error",
        {"instanceId": instance["id"], "error": {"Error": "Boom", "Cause": "the test"}},
    )

    [line] = [e for e in json_lines() if str(e.get("message", "")).startswith("lifecycle of")]
    assert line["level"] == "ERROR"
    assert line["stage"] == "prod"
    assert line["instance_id"] == instance["id"]
    assert line["execution_id"] == instance["executionId"]


def test_a_request_binds_its_paths_instance_and_the_verified_cognito_user():
    event = {
        "httpMethod": "GET", "path": "/api/instances/inst-1", "headers": {},
        "multiValueQueryStringParameters": None, "pathParameters": {"instance_id": "inst-1"},
        "stageVariables": None, "body": None, "isBase64Encoded": False,
        "requestContext": {
            "httpMethod": "GET", "resourcePath": "/api/instances/{instance_id}",
            "authorizer": {"claims": {"sub": "user-sub-7"}},
        },
    }

    keys = logs.invocation_keys(Request(event))

    assert keys["instance_id"] == "inst-1"
    assert keys["user_id"] == "user-sub-7"
