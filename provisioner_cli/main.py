"""The `provisioner` commands: each parses its options, calls the API, prints the answer."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from provisioner_cli import render
from provisioner_cli.client import ApiClient, ApiError
from provisioner_cli.config import API_ENV, DEFAULT_API, TOKEN_ENV, default_token, user_of
from provisioner_cli.exit_codes import ExitCode
from provisioner_cli.waiting import Waiter, WaitTimeout

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

UP = frozenset({"READY", "RUNNING"})
# A launch waited on ends at one of these: up, or never going to be.
LAUNCH_ENDS = UP | {"STOPPING", "TERMINATED", "ERROR"}
STOP_ENDS = frozenset({"TERMINATED", "ERROR"})
# Wide enough that a piped table is never wrapped.
PIPE_WIDTH = 200


@dataclass
class Environment:
    """What the commands take from the world; tests pass their own (CliRunner's `obj`)."""

    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Whether stdout is a terminal (live progress, colours); None: ask it.
    terminal: bool | None = None


@dataclass
class Session:
    env: Environment
    client: ApiClient
    token: str | None
    out: Console
    err: Console

    @property
    def terminal(self) -> bool:
        return self.out.is_terminal

    def waiter(self, json_output: bool, interval: float, timeout: float) -> Waiter:
        # With --json, stdout is the JSON alone: progress goes to stderr, as plain lines.
        return Waiter(
            self.client, self.err if json_output else self.out, self.env.sleep,
            self.env.monotonic, live=self.terminal and not json_output,
            interval=interval, timeout=timeout,
        )


def consoles(env: Environment) -> tuple[Console, Console]:
    out = Console(highlight=False, force_terminal=env.terminal)
    err = Console(stderr=True, highlight=False, force_terminal=env.terminal)
    for console in (out, err):
        if not console.is_terminal:
            console.width = PIPE_WIDTH
    return out, err


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


F = TypeVar("F", bound=Callable[..., Any])


def api_errors(command: F) -> F:
    """Print an API error's detail on stderr and exit with its code."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ApiError as error:
            fail(error.message, error.exit_code)

    return run  # type: ignore[return-value]


def session(ctx: typer.Context) -> Session:
    assert isinstance(ctx.obj, Session)
    return ctx.obj


def fail(message: str, code: ExitCode) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(Text(f"error: {message}"))
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")]
IntervalOption = Annotated[float, typer.Option(
    "--interval", min=0.1, help="Seconds between two reads while waiting or watching.")]
TimeoutOption = Annotated[float, typer.Option(
    "--timeout", min=1, help="Give up waiting after this many seconds (exit 3).")]


class Provider(StrEnum):
    aws = "aws"
    azure = "azure"
    any = "any"


class Activity(StrEnum):
    running = "running"
    idle = "idle"


class Status(StrEnum):
    PROVISIONING = "PROVISIONING"
    CONFIGURING = "CONFIGURING"
    READY = "READY"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"


class GroupBy(StrEnum):
    user = "user"
    task = "task"
    type = "type"
    provider = "provider"
    day = "day"


# --by names of the command line, groupBy values of the API.
GROUP_BY = {"user": "user", "task": "task", "type": "instanceType", "provider": "provider",
            "day": "day"}


def parse_meta(pairs: Iterable[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE.", param_hint="--meta")
        metadata[key] = value
    return metadata


# -- launch -----------------------------------------------------------------------------


@app.command()
@api_errors
def launch(
    ctx: typer.Context,
    instance_type: Annotated[str | None, typer.Argument(
        metavar="TYPE", help="A catalog type (see `provisioner types`); or use --gpu.",
        show_default=False)] = None,
    gpu: Annotated[str | None, typer.Option(
        help="Launch the cheapest type with this GPU model (T4, V100, ...).")] = None,
    gpus: Annotated[int | None, typer.Option(
        help="With --gpu: at least this many GPUs (default 1).", show_default=False)] = None,
    provider: Annotated[Provider | None, typer.Option(
        help="aws or azure; with --gpu also any (the default).", show_default=False)] = None,
    region: Annotated[str | None, typer.Option(help="The provider's region.")] = None,
    task: Annotated[str | None, typer.Option(help="The task id to file it under.")] = None,
    idle: Annotated[int | None, typer.Option(
        help="Stop it after this many idle minutes (5-120, default 30).",
        show_default=False)] = None,
    lifetime: Annotated[int | None, typer.Option(
        help="Stop it after this many minutes whatever it does (default 720).",
        show_default=False)] = None,
    meta: Annotated[list[str] | None, typer.Option(
        help="KEY=VALUE metadata (repeatable).", show_default=False)] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Resending with the same key launches nothing new (default: a fresh one).",
        show_default=False)] = None,
    wait: Annotated[bool | None, typer.Option(
        "--wait/--no-wait", help="Follow it to READY (default: on a terminal).",
        show_default=False)] = None,
    interval: IntervalOption = 1.0,
    timeout: TimeoutOption = 900.0,
    json_output: JsonOption = False,
) -> None:
    """Launch an instance of a TYPE, or the cheapest one with --gpu, and follow it to READY."""
    s = session(ctx)
    body = launch_body(instance_type, gpu, gpus, provider, region, task, idle, lifetime,
                       parse_meta(meta or []))
    launched = s.client.launch(body, idempotency_key)
    instance = launched.instance
    offer = instance.get("offer")
    info = s.err if json_output else s.out
    if launched.replayed:
        info.print(f"Idempotency-Key {launched.idempotency_key} was used before: this is the "
                   "instance it launched; nothing new was launched.")
    if offer and offer.get("chosen"):
        info.print(offer_line(offer))
    if not (s.terminal if wait is None else wait):
        if json_output:
            print_json(instance)
        else:
            s.out.print(f"{instance['id']}  {instance['status']}  {instance['instanceType']} "
                        f"({instance['provider']})  {render.money(instance['hourlyRateUsd'])}/h")
            s.out.print(f"Follow it with: provisioner status {instance['id']}")
        return
    try:
        final = s.waiter(json_output, interval, timeout).until(instance, LAUNCH_ENDS)
    except KeyboardInterrupt:
        offer_to_stop(s, instance["id"])
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except WaitTimeout as late:
        fail(f"{late} It is still starting: `provisioner status {instance['id']}`.",
             ExitCode.INSTANCE_FAILED)
    if offer:
        final = {**final, "offer": offer}
    if json_output:
        print_json(final)
    else:
        s.out.print(render.ready_details(final))
    if final["status"] not in UP:
        reason = final.get("statusReason") or "no reason given"
        fail(f"{final['id']} ended {final['status']}: {reason}", ExitCode.INSTANCE_FAILED)


def launch_body(instance_type: str | None, gpu: str | None, gpus: int | None,
                provider: Provider | None, region: str | None, task: str | None,
                idle: int | None, lifetime: int | None,
                metadata: dict[str, str]) -> dict[str, Any]:
    if (instance_type is None) == (gpu is None):
        raise typer.BadParameter("Give either a TYPE or --gpu, one of the two.",
                                 param_hint="TYPE / --gpu")
    body: dict[str, Any]
    if instance_type is not None:
        if gpus is not None:
            raise typer.BadParameter("--gpus goes with --gpu, not with a TYPE.",
                                     param_hint="--gpus")
        if provider is Provider.any:
            raise typer.BadParameter("'any' goes with --gpu; a TYPE has one provider.",
                                     param_hint="--provider")
        body = {"instanceType": instance_type}
    else:
        body = {"gpu": gpu}
        if gpus is not None:
            body["gpuCount"] = gpus
    optional = {
        "provider": provider.value if provider else None, "region": region, "taskId": task,
        "autoTerminateMinutes": idle, "maxLifetimeMinutes": lifetime,
        "metadata": metadata or None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def offer_line(offer: dict[str, Any]) -> str:
    chosen = offer["chosen"]
    line = (f"Chose {chosen['instanceType']} ({chosen['provider']}, "
            f"{render.gpu_text(chosen['gpu'])}) at {render.money(chosen['hourlyUsd'])}/h")
    others = [f"{a['instanceType']} {render.money(a['hourlyUsd'])}/h"
              + ("" if a["available"] else " (unavailable)") for a in offer["alternatives"]]
    return line + (f"; also matching: {', '.join(others)}" if others else "")


def offer_to_stop(s: Session, instance_id: str) -> None:
    s.err.print()
    try:
        stop = typer.confirm(f"Stop {instance_id} now?", default=False, err=True)
    except typer.Abort:
        stop = False
    if stop:
        s.err.print(render.stopped_line(s.client.stop(instance_id)))
    else:
        s.err.print(f"{instance_id} keeps running; stop it with: "
                    f"provisioner stop {instance_id}")


# -- status -----------------------------------------------------------------------------


@app.command()
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


def render_now(s: Session) -> str:
    return s.env.now().isoformat(timespec="seconds")


def report_missing(failures: list[ApiError]) -> None:
    if not failures:
        return
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for error in failures:
        err.print(Text(f"error: {error.message}"))
    raise typer.Exit(ExitCode.NOT_FOUND)


# -- stop, activity, limits -------------------------------------------------------------


@app.command()
@api_errors
def stop(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(metavar="ID...", help="The instances to stop.")],
    wait: Annotated[bool, typer.Option(
        "--wait", help="Follow each to TERMINATED and show its final cost.")] = False,
    interval: IntervalOption = 1.0,
    timeout: TimeoutOption = 300.0,
    json_output: JsonOption = False,
) -> None:
    """Stop instances: the cloud is asked at once to terminate each machine."""
    s = session(ctx)
    stopped: list[dict[str, Any]] = []
    failures: list[ApiError] = []
    for instance_id in ids:
        try:
            instance = s.client.stop(instance_id)
        except ApiError as error:
            if error.exit_code is not ExitCode.NOT_FOUND:
                raise
            failures.append(error)
            continue
        if wait:
            try:
                instance = s.waiter(json_output, interval, timeout).until(instance, STOP_ENDS)
            except KeyboardInterrupt:
                raise typer.Exit(ExitCode.INTERRUPTED) from None
            except WaitTimeout as late:
                fail(f"{late} The stop was asked; `provisioner status {instance_id}`.",
                     ExitCode.INSTANCE_FAILED)
        stopped.append(instance)
        if not json_output:
            s.out.print(render.stopped_line(instance))
    if json_output:
        print_json(stopped)
    report_missing(failures)


@app.command()
@api_errors
def activity(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument(metavar="ID")],
    state: Annotated[Activity, typer.Argument(
        metavar="running|idle", help="running: a task started (or a heartbeat); idle: it ended.")],
    json_output: JsonOption = False,
) -> None:
    """Report a task running or idle on an instance (restarts its idle clock)."""
    s = session(ctx)
    instance = s.client.report_activity(instance_id, state.value)
    if json_output:
        print_json(instance)
        return
    s.out.print(f"{instance['id']}  {instance['status']}  idle stop in "
                f"{render.idle_left(instance, s.env.now())}")


@app.command()
@api_errors
def limits(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument(metavar="ID")],
    idle: Annotated[int | None, typer.Option(
        help="The new idle timeout in minutes.", show_default=False)] = None,
    lifetime: Annotated[int | None, typer.Option(
        help="The new lifetime in minutes (from the launch).", show_default=False)] = None,
    json_output: JsonOption = False,
) -> None:
    """Change a live instance's idle timeout or lifetime."""
    s = session(ctx)
    changes = {k: v for k, v in (("autoTerminateMinutes", idle),
                                 ("maxLifetimeMinutes", lifetime)) if v is not None}
    if not changes:
        raise typer.BadParameter("Give --idle, --lifetime or both.", param_hint="--idle")
    instance = s.client.update_limits(instance_id, changes)
    if json_output:
        print_json(instance)
        return
    s.out.print(render.details_table([
        ("id", instance["id"]),
        ("idle stop", f"after {instance['autoTerminateMinutes']} idle minutes"
                      f" ({instance.get('idleDeadline') or '-'})"),
        ("lifetime", f"{instance.get('maxLifetimeMinutes')} minutes"
                     f" ({instance.get('lifetimeDeadline') or '-'})"),
    ]))


# -- catalog, costs, stats --------------------------------------------------------------


@app.command()
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


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def api_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@app.command()
@api_errors
def costs(
    ctx: typer.Context,
    start: Annotated[datetime | None, typer.Option(
        "--from", help="Start of the window, UTC (default: the 1st of this month).",
        show_default=False)] = None,
    end: Annotated[datetime | None, typer.Option(
        "--to", help="End of the window, UTC, excluded (default: now).",
        show_default=False)] = None,
    by: Annotated[GroupBy, typer.Option(
        help="Group the costs by this; `day` draws a bar chart.")] = GroupBy.type,
    json_output: JsonOption = False,
) -> None:
    """What the instances cost in a window, grouped; with --by day, a bar chart."""
    s = session(ctx)
    now = s.env.now()
    report = s.client.costs(api_time(start or month_start(now)), api_time(end or now),
                            GROUP_BY[by.value])
    if json_output:
        print_json(report)
        return
    s.out.print(f"Costs from {report['from']} to {report['to']}, by {by.value}")
    if report.get("groups"):
        s.out.print(render.costs_table(report, chart=by is GroupBy.day))
    else:
        s.out.print(f"Nothing was billed in this window. Total {render.money(report['totalUsd'])}")


@app.command()
@api_errors
def stats(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Fleet figures: counts, burn rate, cost, saving (operators: every user's)."""
    s = session(ctx)
    figures = s.client.stats()
    if json_output:
        print_json(figures)
    else:
        s.out.print(render.stats_table(figures))
