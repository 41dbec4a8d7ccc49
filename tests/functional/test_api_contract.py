"""The API keeps its OpenAPI contract: schemathesis generates valid and invalid requests for
every documented operation and checks each answer against the document (no 5xx, documented
status codes, content types and schemas). Bounded here; `make fuzz` runs a longer search."""

from __future__ import annotations

import os

import pytest
import schemathesis
from chalice.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.functional.chalice_wsgi import ChaliceWsgi

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))


class CurrentApp:
    """The WSGI app schemathesis sends to (and probes with): each test's own app, set by
    the fixture below, so every case runs against that test's emulated AWS."""

    target: ChaliceWsgi | None = None

    def __call__(self, environ, start_response):
        assert self.target is not None, "no app is being tested"
        return self.target(environ, start_response)


current_app = CurrentApp()


@pytest.fixture
def wsgi_app(aws):
    import app

    with Client(app.app) as client:
        current_app.target = ChaliceWsgi(client)
        yield current_app
        current_app.target = None


def load_schema():
    from chalicelib.api.contract import openapi_document

    config = SchemathesisConfig.from_dict({
        "checks": {
            # A schema-valid request may still be one the service cannot act on: an
            # opaque cursor it never issued (400), an id nobody owns (404), a transition the
            # state forbids (409), no type matching a requirement (422), a provider this
            # deployment lacks (503). Each is documented; anything else fails the check.
            "positive_data_acceptance": {
                "expected-statuses": ["2XX", 400, 404, 409, 422, 503],
            },
        },
    })
    loaded = schemathesis.openapi.from_dict(openapi_document(), config=config)
    loaded.app = current_app
    return loaded


schema = load_schema()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_answers_within_its_contract(case, wsgi_app):
    if case.path.startswith("/api/agent/"):
        # An agent route takes only its instance's secret, which no fuzzer can hold: every
        # answer must still be a documented one, and none may let the request through.
        response = case.call_and_validate(
            headers={"Authorization": "Agent not-the-secret"},
            excluded_checks=[positive_data_acceptance],
        )
        assert 400 <= response.status_code < 500, response.text
        return
    case.call_and_validate(headers={"Authorization": "Bearer dev:fuzzer"})
