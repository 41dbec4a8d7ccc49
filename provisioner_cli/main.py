"""The `provisioner` command: its global options and its commands (provisioner_cli.commands)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from provisioner_cli.client import ApiClient
from provisioner_cli.commands import catalog, instances, listing
from provisioner_cli.config import API_ENV, DEFAULT_API, TOKEN_ENV, default_token
from provisioner_cli.session import Environment, Session, consoles

app = typer.Typer(
    name="provisioner",
    help="Launch, watch, list and stop GPU instances of the Instance Provisioner, and see "
    "what they cost. Exit codes: 0 ok, 2 usage error, 3 the instance failed or the wait "
    "timed out, 4 request refused, 5 not found, 6 API unreachable, 7 API error, "
    "130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    api: Annotated[str | None, typer.Option(
        "--api", envvar=API_ENV, show_default=DEFAULT_API,
        help="The API's base URL (the /api paths hang off it).")] = None,
    token: Annotated[str | None, typer.Option(
        "--token", envvar=TOKEN_ENV, show_default="dev:$USER on a local URL",
        help="The bearer token.")] = None,
) -> None:
    env = ctx.obj if isinstance(ctx.obj, Environment) else Environment()
    base = api or DEFAULT_API
    token = token or default_token(base, os.environ)
    client = ApiClient(base, token, env.transport)
    ctx.call_on_close(client.close)
    out, err = consoles(env)
    ctx.obj = Session(env, client, token, out, err)


for command in (instances.launch, listing.status, instances.stop, instances.activity,
                instances.limits, catalog.types, catalog.costs, catalog.stats):
    app.command()(command)
