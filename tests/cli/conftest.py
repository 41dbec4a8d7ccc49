"""The `provisioner` command run with typer's CliRunner against the API served in-process:
the Chalice app over the emulated AWS, reached through httpx's WSGI transport (no port).
The command's sleep moves the fixed clock on and lets the started workflows finish, so a
wait takes no time and its figures are exact."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from chalice.test import Client
from typer.testing import CliRunner, Result

from local.emulator import EmulatedAws
from provisioner_cli.main import Environment, app
from tests.conftest import FakeClock
from tests.functional.chalice_wsgi import ChaliceWsgi


class Cli:
    def __init__(self, transport: httpx.BaseTransport, aws: EmulatedAws,
                 clock: FakeClock) -> None:
        self.transport = transport
        self.aws = aws
        self.clock = clock
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds=seconds)
        self.aws.wait_for_workflows()

    def __call__(
        self, *args: str, user: str | None = "alice", input: str | None = None,
        sleep: Callable[[float], None] | None = None, api: str | None = None,
        network: bool = False, terminal: bool = False,
    ) -> Result:
        """Run `provisioner ARGS` as `user`; with `network`, over a real socket to `api`."""
        env = Environment(
            transport=None if network else self.transport,
            sleep=sleep or self.sleep,
            monotonic=lambda: self.clock().timestamp(),
            now=self.clock,
            terminal=terminal,
        )
        options = [] if user is None else ["--token", f"dev:{user}"]
        if api is not None:
            options += ["--api", api]
        # A terminal of 120 columns, where the status table fits on one line per instance.
        columns = {"COLUMNS": "120"} if terminal else {}
        return CliRunner().invoke(app, [*options, *args], input=input, obj=env, env=columns,
                                  catch_exceptions=False)

    def json(self, *args: str, **kwargs: Any) -> Any:
        result = self(*args, "--json", **kwargs)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def cli(aws: EmulatedAws, clock: FakeClock) -> Iterator[Cli]:
    import app as chalice_app

    with Client(chalice_app.app) as client:
        yield Cli(httpx.WSGITransport(app=ChaliceWsgi(client)), aws, clock)
