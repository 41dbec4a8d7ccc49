"""`provisioner status`: the table of instances, once or refreshed."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.text import Text

from provisioner_cli import render
from provisioner_cli.client import ApiError
from provisioner_cli.config import user_of
from provisioner_cli.exit_codes import ExitCode
from provisioner_cli.session import (
    IntervalOption,
    JsonOption,
    api_errors,
    print_json,
    render_now,
    report_missing,
    session,
)


class Status(StrEnum):
    PROVISIONING = "PROVISIONING"
    CONFIGURING = "CONFIGURING"
    READY = "READY"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"


@api_errors
def status(
    ctx: typer.Context,
    ids: Annotated[list[str] | None, typer.Argument(
        metavar="ID...", help="Show these instances (default: your list).",
        show_default=False)] = None,
    all_users: Annotated[bool, typer.Option(
        "--all", help="Operators: every user's instances.")] = False,
    user: Annotated[str | None, typer.Option(
        help="Operators: this user's instances.", show_default=False)] = None,
    status_filter: Annotated[Status | None, typer.Option(
        "--status", help="Only instances in this status.", show_default=False)] = None,
    task: Annotated[str | None, typer.Option(
        help="Only instances of this task.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 50,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Refresh every --interval seconds until Ctrl-C.")] = False,
    interval: IntervalOption = 2.0,
    json_output: JsonOption = False,
) -> None:
    """A table of your instances: type, provider, status, age, idle time left, cost so far."""
    s = session(ctx)
    if ids and (all_users or user or status_filter or task):
        raise typer.BadParameter("IDs show those instances; filters go with a listing.",
                                 param_hint="ID")
    owner = None if all_users else (user or user_of(s.token))
    failures: list[ApiError] = []

    def read() -> list[dict[str, Any]]:
        failures.clear()
        if not ids:
            wanted = status_filter.value if status_filter else None
            listed = s.client.list_instances(wanted, task, owner, limit)
            # Newest first, also for an operator's listing of everyone (a scan, unordered).
            return sorted(listed, key=lambda i: str(i["createdAt"]), reverse=True)
        found = []
        for instance_id in ids:
            try:
                found.append(s.client.get(instance_id))
            except ApiError as error:
                if error.exit_code is not ExitCode.NOT_FOUND:
                    raise
                failures.append(error)
        return found

    def table(instances: list[dict[str, Any]]) -> Any:
        if not instances and not failures:
            return Text("No instances.")
        return render.instances_table(instances, s.env.now(),
                                      show_user=all_users or user is not None)

    if not watch:
        instances = read()
        if json_output:
            print_json(instances if ids else {"items": instances})
        elif instances or not failures:
            s.out.print(table(instances))
        report_missing(failures)
        return
    try:
        if s.terminal and not json_output:
            with Live(table(read()), console=s.out, auto_refresh=False) as live:
                while True:
                    s.env.sleep(interval)
                    live.update(table(read()), refresh=True)
        while True:
            instances = read()
            if json_output:
                typer.echo(json.dumps({"at": render_now(s), "items": instances}))
            else:
                s.out.print(f"-- {render_now(s)}")
                s.out.print(table(instances))
            s.env.sleep(interval)
    except KeyboardInterrupt:
        return
