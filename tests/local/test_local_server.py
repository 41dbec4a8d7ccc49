"""`make run`'s HTTP server answers the methods API Gateway refuses as the API refuses the
others: a 405 problem document naming the methods allowed, never the Python server's 501
HTML page."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import pytest
from chalice.config import Config

from local.server import local_server


@pytest.fixture
def server(aws) -> Iterator[int]:
    import app

    served = local_server(app.app, Config.create(chalice_stage="local"), "127.0.0.1", 0)
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served.server.server_address[1]
    served.server.shutdown()
    served.server.server_close()


def call(port: int, method: str, path: str) -> tuple[int, dict[str, str], dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, headers={"Authorization": "Bearer dev:alice"})
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response.status, dict(response.getheaders()), body


@pytest.mark.parametrize("method", ["TRACE", "CONNECT"])
def test_trace_and_connect_answer_405_problems_naming_the_allowed_methods(server, method):
    status, headers, body = call(server, method, "/api/instances/inst-1?x=1")

    assert status == 405
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Allow"] == "DELETE, GET, PATCH"
    assert body["error"] == "method_not_allowed"
    assert body["detail"] == (
        f"{method} is not supported on /api/instances/{{instanceId}}; use DELETE, GET, PATCH."
    )


def test_trace_on_a_path_the_api_does_not_have_is_a_404_problem(server):
    status, headers, body = call(server, "TRACE", "/api/nothing-here")

    assert (status, body["error"]) == (404, "not_found")
    assert headers["Content-Type"] == "application/problem+json"


def test_the_other_methods_still_reach_the_api(server):
    status, _, body = call(server, "GET", "/api/instances")

    assert (status, body["items"]) == (200, [])
