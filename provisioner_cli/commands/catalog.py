"""Commands that read figures: the catalog, the cost report, the fleet stats."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer

from provisioner_cli import render
from provisioner_cli.session import JsonOption, Provider, api_errors, print_json, session


class GroupBy(StrEnum):
    user = "user"
    task = "task"
    type = "type"
    provider = "provider"
    day = "day"


# --by names of the command line, groupBy values of the API.
GROUP_BY = {"user": "user", "task": "task", "type": "instanceType", "provider": "provider",
            "day": "day"}


@api_errors
def types(
    ctx: typer.Context,
    gpu: Annotated[str | None, typer.Option(help="Only this GPU model.")] = None,
    provider: Annotated[Provider | None, typer.Option(
        help="Only this provider.", show_default=False)] = None,
    min_gpus: Annotated[int | None, typer.Option(
        help="At least this many GPUs.", show_default=False)] = None,
    json_output: JsonOption = False,
) -> None:
    """The catalog: every instance type with its GPU, size, hourly price and billing rule."""
    s = session(ctx)
    chosen = None if provider in (None, Provider.any) else provider.value
    items = s.client.instance_types(gpu, chosen, min_gpus)
    if json_output:
        print_json({"items": items})
    elif items:
        s.out.print(render.types_table(items))
    else:
        s.out.print("No instance type matches.")


def api_time(moment: datetime) -> str:
    """A time of the command line (UTC when it names no zone) as the API reads it."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@api_errors
def costs(
    ctx: typer.Context,
    start: Annotated[datetime | None, typer.Option(
        "--from",
        help="Start of the window, UTC (default: the 1st of the month --to falls in, this "
        "month without --to).",
        show_default=False)] = None,
    end: Annotated[datetime | None, typer.Option(
        "--to", help="End of the window, UTC, excluded (default: now; at most 92 days).",
        show_default=False)] = None,
    by: Annotated[GroupBy, typer.Option(
        help="Group the costs by this; `day` draws a bar chart.")] = GroupBy.type,
    user: Annotated[str | None, typer.Option(
        help="Operators: this user's costs only.", show_default=False)] = None,
    json_output: JsonOption = False,
) -> None:
    """What the instances cost in a window, grouped; with --by day, a bar chart."""
    s = session(ctx)
    # The window's defaults are the API's (its clock), so only what was given is sent.
    report = s.client.costs(
        api_time(start) if start else None, api_time(end) if end else None,
        GROUP_BY[by.value], user,
    )
    if json_output:
        print_json(report)
        return
    s.out.print(f"Costs from {report['from']} to {report['to']}, by {by.value}")
    if report.get("groups"):
        s.out.print(render.costs_table(report, chart=by is GroupBy.day, label=by.value))
    else:
        s.out.print(f"Nothing was billed in this window. Total {render.money(report['totalUsd'])}")


@api_errors
def stats(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Fleet figures: counts, burn rate, cost, saving (operators: every user's)."""
    s = session(ctx)
    figures = s.client.stats()
    if json_output:
        print_json(figures)
    else:
        s.out.print(render.stats_table(figures))
