"""The OpenAPI document: valid 3.1, served without a token, in step with docs/ and routes."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from chalicelib.api.contract import OPERATIONS, chalice_route, openapi_document
from local.write_openapi import TARGET, render


def test_the_document_is_valid_openapi_3_1():
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_the_document_is_served_without_a_token(api):
    status, served, headers = api.call("GET", "/api/openapi.json", user=None)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert served == openapi_document()


def test_docs_openapi_json_is_the_served_document():
    # Fails when the API changed and `make openapi` was not run.
    assert TARGET.read_text() == render()


def test_every_route_is_documented_and_every_operation_routed():
    import app

    documented = {(chalice_route(op.path), op.method) for op in OPERATIONS}
    implemented = {
        (path, method)
        for path, methods in app.app.routes.items()
        for method, entry in methods.items()
        if not entry.view_name.startswith("refuse_")
    }
    assert implemented == documented


def test_every_operation_documents_its_errors_as_problem_documents():
    for path, methods in openapi_document()["paths"].items():
        for method, operation in methods.items():
            for code, answer in operation["responses"].items():
                if int(code) >= 400:
                    assert list(answer["content"]) == ["application/problem+json"], (
                        method, path, code,
                    )


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_a_method_a_path_does_not_support_answers_405_with_allow(api, method):
    status, body, headers = api.call(method, "/api/instances", body={})
    assert status == 405
    assert headers["Allow"] == "GET, POST"
    assert body["error"] == "method_not_allowed"
    assert headers["Content-Type"] == "application/problem+json"


def test_a_body_that_is_not_json_answers_415(api):
    status, body, _ = api.call(
        "POST", "/api/instances", raw_body="instanceType=g4dn.xlarge",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415
    assert body["error"] == "unsupported_media_type"
    assert "application/json" in body["detail"]
