"""What the commands print: rich tables and lines built from the API's JSON answers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.bar import Bar
from rich.table import Table
from rich.text import Text

LIVE = frozenset({"PROVISIONING", "CONFIGURING", "READY", "RUNNING", "STOPPING"})
STATUS_STYLES = {
    "PROVISIONING": "yellow", "CONFIGURING": "yellow", "READY": "green", "RUNNING": "cyan",
    "STOPPING": "magenta", "TERMINATED": "dim", "ERROR": "bold red",
}
BAR_WIDTH = 40


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def duration(seconds: float) -> str:
    """A short human duration: 45s, 3m12s, 1h05m, 2d03h."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def money(value: str | None) -> str:
    return "-" if value is None else f"${value}"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def gpu_text(gpu: Mapping[str, Any] | None) -> str:
    return f"{gpu['count']} x {gpu['model']}" if gpu else "-"


def age(instance: Mapping[str, Any], now: datetime) -> str:
    created = parse_time(instance.get("createdAt"))
    return duration((now - created).total_seconds()) if created else "-"


def idle_left(instance: Mapping[str, Any], now: datetime) -> str:
    """Time until the idle stop, for an instance whose idle clock runs (READY or RUNNING)."""
    deadline = parse_time(instance.get("idleDeadline"))
    if deadline is None or instance.get("status") not in ("READY", "RUNNING"):
        return "-"
    return duration((deadline - now).total_seconds())


def instances_table(instances: Sequence[Mapping[str, Any]], now: datetime,
                    show_user: bool = False) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    # On a narrow terminal the id is folded onto more lines, never cut: it is what `stop` takes.
    table.add_column("ID", overflow="fold")
    if show_user:
        table.add_column("USER", no_wrap=True)
    for name in ("TYPE", "PROVIDER", "STATUS"):
        table.add_column(name, no_wrap=True)
    table.add_column("AGE", justify="right", no_wrap=True)
    table.add_column("IDLE LEFT", justify="right", no_wrap=True)
    table.add_column("COST", justify="right", no_wrap=True)
    for instance in instances:
        row: list[str | Text] = [instance["id"]]
        if show_user:
            row.append(instance.get("userId") or "-")
        row += [
            instance["instanceType"], instance["provider"], status_text(instance["status"]),
            age(instance, now), idle_left(instance, now), money(instance.get("costUsd")),
        ]
        table.add_row(*row)
    return table


def details_table(rows: Iterable[tuple[str, str | Text]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    return table


def ready_details(instance: Mapping[str, Any]) -> Table:
    """What a launch shows once the instance is up: how to reach it and what it costs."""
    ips = ", ".join(
        f"{ip} ({kind})" for kind, ip in (("public", instance.get("publicIp")),
                                          ("private", instance.get("privateIp"))) if ip
    )
    return details_table([
        ("id", instance["id"]),
        ("status", status_text(instance["status"])),
        ("type", f"{instance['instanceType']} ({instance['provider']}, {instance['region']})"),
        ("gpu", gpu_text(instance.get("gpu"))),
        ("ip", ips or "-"),
        ("rate", f"{money(instance.get('hourlyRateUsd'))}/h"),
        ("idle stop", f"after {instance['autoTerminateMinutes']} idle minutes"),
    ])


def stopped_line(instance: Mapping[str, Any]) -> str:
    status = instance["status"]
    reason = instance.get("statusReason")
    line = f"{instance['id']}  {status}"
    if reason:
        line += f" ({reason})"
    billing = instance.get("billing") or {}
    started, ended = parse_time(billing.get("startedAt")), parse_time(billing.get("endedAt"))
    if status in ("TERMINATED", "ERROR"):
        line += f"  final cost {money(instance.get('costUsd'))}"
        if started and ended:
            ran = (ended - started).total_seconds()
            line += f" (ran {duration(ran)}, billed {duration(billed_seconds(ran, billing))})"
    else:
        line += f"  cost so far {money(instance.get('costUsd'))}"
    return line


def billed_seconds(ran: float, billing: Mapping[str, Any]) -> int:
    """The seconds a run is billed for under the record's rule: whole increments, at least
    the minimum (the API's costUsd is the authority; this explains it)."""
    increment = max(1, int(billing.get("incrementSeconds") or 1))
    return max(int(billing.get("minimumSeconds") or 0), math.ceil(ran / increment) * increment)


def types_table(types: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (("NAME", "left"), ("PROVIDER", "left"), ("GPU", "left"),
                          ("VCPUS", "right"), ("MEMORY", "right"), ("HOURLY", "right"),
                          ("BILLING", "left")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for item in types:
        billing = item["billing"]
        rule = f"per {billing['incrementSeconds']} s"
        if billing.get("minimumSeconds"):
            rule += f", {billing['minimumSeconds']} s minimum"
        table.add_row(
            item["name"], item["provider"], gpu_text(item.get("gpu")), str(item["vcpus"]),
            f"{item['memoryGib']} GiB", money(item["hourlyUsd"]), rule,
        )
    return table


def stats_table(stats: Mapping[str, Any]) -> Table:
    by_status = ", ".join(f"{k} {v}" for k, v in stats["byStatus"].items() if v)
    by_provider = ", ".join(f"{k} {v}" for k, v in stats["byProvider"].items())
    saving = money(stats["savingUsd"])
    if stats.get("savingPercent") is not None:
        saving += f" ({stats['savingPercent']}%)"
    return details_table([
        ("instances", f"{stats['live']} live of {stats['total']}"),
        ("by status", by_status or "-"),
        ("by provider", by_provider or "-"),
        ("burn rate", f"{money(stats['burnRateUsdPerHour'])}/h"),
        ("total cost", money(stats["totalCostUsd"])),
        ("always-on cost", money(stats["alwaysOnCostUsd"])),
        ("saving", saving),
        ("since", stats.get("periodStart") or "-"),
    ])


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


def costs_table(report: Mapping[str, Any], chart: bool, label: str | None = None) -> Table:
    """The cost report's groups; with `chart`, a bar per group scaled to the largest."""
    groups = report.get("groups") or []
    table = Table(box=None, header_style="bold", pad_edge=False, show_footer=True)
    heading = label or str(report.get("groupBy", "key"))
    table.add_column(heading.upper(), "TOTAL", no_wrap=True)
    table.add_column("COST", money(report.get("totalUsd")), justify="right", no_wrap=True)
    if chart:
        table.add_column("", no_wrap=True, width=BAR_WIDTH)
    table.add_column("BILLED", justify="right", no_wrap=True)
    table.add_column("INSTANCES", justify="right", no_wrap=True)
    largest = max((_decimal(g["costUsd"]) for g in groups), default=Decimal(0))
    for group in groups:
        # A group of instances without the key (no task) has none.
        key = "-" if group.get("key") is None else str(group["key"])
        row: list[Any] = [key, money(group["costUsd"])]
        if chart:
            share = float(_decimal(group["costUsd"]) / largest) if largest else 0.0
            row.append(Bar(size=1.0, begin=0.0, end=share, width=BAR_WIDTH, color="cyan"))
        row += [duration(float(group["billedSeconds"])), str(group["instances"])]
        table.add_row(*row)
    return table
