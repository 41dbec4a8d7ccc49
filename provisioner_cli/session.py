"""What every command shares: the injected environment, the API client and consoles of one
run, the common options, and how an error ends a command."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NoReturn, TypeVar

import httpx
import typer
from rich.console import Console
from rich.text import Text

from provisioner_cli.client import ApiClient, ApiError
from provisioner_cli.exit_codes import ExitCode
from provisioner_cli.waiting import Waiter

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


def fail(message: str, code: ExitCode) -> NoReturn:
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


def render_now(s: Session) -> str:
    return s.env.now().isoformat(timespec="seconds")


def report_missing(failures: list[ApiError]) -> None:
    if not failures:
        return
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for error in failures:
        err.print(Text(f"error: {error.message}"))
    raise typer.Exit(ExitCode.NOT_FOUND)
