"""Following an instance until it reaches a status: a live line on a terminal, plain lines
otherwise. The sleep and the clock come in from outside, so tests never wait."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from provisioner_cli.client import ApiClient
from provisioner_cli.render import duration

ARROW = " -> "


class WaitTimeout(Exception):
    def __init__(self, instance: dict[str, Any], seconds: float) -> None:
        super().__init__(f"{instance['id']} is still {instance['status']} after "
                         f"{duration(seconds)}.")
        self.instance = instance


@dataclass
class Waiter:
    client: ApiClient
    console: Console
    sleep: Callable[[float], None]
    monotonic: Callable[[], float]
    live: bool
    interval: float = 1.0
    timeout: float = 900.0

    def until(self, instance: dict[str, Any], statuses: Collection[str]) -> dict[str, Any]:
        """Poll the record until its status is one of `statuses`; show each status reached
        with the time since the wait began. WaitTimeout after `timeout` seconds."""
        started = self.monotonic()
        seen: list[str] = []

        def show(record: dict[str, Any]) -> str:
            elapsed = self.monotonic() - started
            if not seen or seen[-1] != record["status"]:
                seen.append(record["status"])
                if not self.live:
                    self.console.print(f"{record['id']}  {record['status']:<12} "
                                       f"{duration(elapsed)}", highlight=False)
            return f"{record['id']}  {ARROW.join(seen)}  {duration(elapsed)}"

        if not self.live:
            return self._poll(instance, statuses, show, started)
        with self.console.status(show(instance)) as live:
            return self._poll(instance, statuses, show, started, live.update)

    def _poll(self, instance: dict[str, Any], statuses: Collection[str],
              show: Callable[[dict[str, Any]], str], started: float,
              update: Callable[[str], None] | None = None) -> dict[str, Any]:
        record = instance
        show(record)
        while record["status"] not in statuses:
            if self.monotonic() - started >= self.timeout:
                raise WaitTimeout(record, self.timeout)
            self.sleep(self.interval)
            record = self.client.get(record["id"])
            line = show(record)
            if update is not None:
                update(line)
        return record
