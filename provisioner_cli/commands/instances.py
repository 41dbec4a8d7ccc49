"""Commands that act on instances: launch (and follow), stop, report activity, change limits."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any

import typer

from provisioner_cli import render
from provisioner_cli.client import ApiError
from provisioner_cli.exit_codes import ExitCode
from provisioner_cli.session import (
    IntervalOption,
    JsonOption,
    Provider,
    Session,
    TimeoutOption,
    api_errors,
    fail,
    print_json,
    report_missing,
    session,
)
from provisioner_cli.waiting import WaitTimeout

UP = frozenset({"READY", "RUNNING"})
# A launch waited on ends at one of these: up, or never going to be.
LAUNCH_ENDS = UP | {"STOPPING", "TERMINATED", "ERROR"}
STOP_ENDS = frozenset({"TERMINATED", "ERROR"})


class Activity(StrEnum):
    running = "running"
    idle = "idle"


def parse_meta(pairs: Iterable[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE.", param_hint="--meta")
        metadata[key] = value
    return metadata


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


@api_errors
def limits(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument(metavar="ID")],
    idle: Annotated[int | None, typer.Option(
        help="The new idle timeout in minutes.", show_default=False)] = None,
    lifetime: Annotated[int | None, typer.Option(
        help="The new lifetime in minutes (counted from the instance's creation).",
        show_default=False)] = None,
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
