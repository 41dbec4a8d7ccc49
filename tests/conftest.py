"""Shared fixtures: a fixed clock, the embedded AWS emulation, and an API client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import bootstrap
from chalicelib.bootstrap import Container
from local.emulator import EmulatedAws, emulated_aws

START = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def aws(clock: FakeClock) -> Iterator[EmulatedAws]:
    with emulated_aws() as emulation:
        bootstrap.use(Container(settings=emulation.settings, clock=clock))
        try:
            yield emulation
        finally:
            bootstrap.use(None)


class Api:
    """Calls the Chalice app as API Gateway would, with a local dev token."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def call(
        self, method: str, path: str, user: str | None = "alice", body: Any = None,
        raw_body: str | None = None, headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if user is not None:
            all_headers.setdefault("Authorization", f"Bearer dev:{user}")
        payload = raw_body if raw_body is not None else (
            json.dumps(body) if body is not None else None
        )
        kwargs: dict[str, Any] = {"headers": all_headers}
        if payload is not None:
            kwargs["body"] = payload
        response = getattr(self.client.http, method.lower())(path, **kwargs)
        parsed = json.loads(response.body) if response.body else None
        return response.status_code, parsed, dict(response.headers)

    def provision(self, user: str = "alice", **body: Any) -> dict:
        status, instance, _ = self.call(
            "POST", "/api/instances", user=user, body={"instanceType": "g4dn.xlarge", **body}
        )
        assert status == 202, instance
        return instance


@pytest.fixture
def api(aws: EmulatedAws) -> Iterator[Api]:
    import app

    with Client(app.app) as client:
        yield Api(client)
