"""GET /api/instances/stats and a status-filtered list for one user with 100 and with 10,000
terminated records (plus the same 5 READY ones), and the cost report of a month of those
records: time, DynamoDB calls and items read.

Target (issue 10.4): stats and `?status=READY&limit=50` take at most 1.2x as long with
10,000 finished records as with 100 (the figures come from aggregates and indexes, not the
history). To seed 10,000 records in reasonable time, the finished records are written in
batches of 25 with the repository's own mapping, and their finished totals are added to
the user's usage item in one write of the same attributes the release write adds to (the
release path itself is covered by tests/functional/test_stats_from_aggregates.py); the live
ones go through the quota reservation and the repository. The calls are then timed through
the Chalice app, the median of `repeats`.
Run: .venv/bin/python bench/stats_and_lists.py [history] [repeats]"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalice.test import Client  # noqa: E402

from chalicelib import bootstrap  # noqa: E402
from chalicelib.bootstrap import Container  # noqa: E402
from chalicelib.domain.instance import Instance, StatusChange  # noqa: E402
from chalicelib.domain.states import InstanceStatus  # noqa: E402
from chalicelib.persistence.dynamodb import InstanceModel, _to_model  # noqa: E402
from local.emulator import REGION, emulated_aws  # noqa: E402

NOW = datetime(2026, 3, 31, 12, 0, 0, tzinfo=UTC)
MONTH = datetime(2026, 3, 1, tzinfo=UTC)
LIVE = 5


class Clock:
    def __call__(self) -> datetime:
        return NOW


def record(n: int, status: InstanceStatus, launched: datetime, ended: datetime | None,
           kind: Any) -> Instance:
    return Instance(
        id=f"inst-{n:032x}", user_id="alice", provider="aws", region=REGION,
        instance_type=kind.name, gpu_model=kind.gpu_model, gpu_count=kind.gpu_count,
        hourly_usd=kind.hourly_usd, billing_rule=kind.billing_rule, idle_timeout_minutes=30,
        status=status, created_at=launched, updated_at=ended or launched,
        status_entered_at=ended or launched, last_activity_at=NOW, launched_at=launched,
        billing_ended_at=ended, terminated_at=ended,
        status_history=(StatusChange(status, ended or launched),),
    )


def seed(container: Container, history: int) -> None:
    kind = container.catalog.find("g4dn.xlarge")
    quotas, records = container.quotas, container.records
    spacing = (NOW - MONTH - timedelta(hours=2)) / history
    cost = Decimal("0")
    with InstanceModel.batch_write() as batch:
        for n in range(history):
            launched = MONTH + spacing * n
            finished = record(n, InstanceStatus.TERMINATED, launched,
                              launched + timedelta(hours=1), kind)
            finished = finished.with_cost_accrued(launched + timedelta(hours=1))
            cost += finished.accrued_cost
            batch.save(_to_model(finished, container.settings.policy))
    quotas.store.client.update_item(
        TableName=quotas.store.table, Key={"pk": {"S": "usage"}, "sk": {"S": "user#alice"}},
        UpdateExpression="ADD #s :n, #p :n, finished_cost :c, #r :h SET first_launch = :t",
        ExpressionAttributeNames={
            "#s": "finished#TERMINATED", "#p": "finished-provider#aws",
            "#r": f"launched-hourly#{kind.billing_rule.name}",
        },
        ExpressionAttributeValues={
            ":n": {"N": str(history)}, ":c": {"N": str(cost)},
            ":h": {"N": str(kind.hourly_usd * history)}, ":t": {"S": MONTH.isoformat()},
        },
    )
    for n in range(history, history + LIVE):
        live = record(n, InstanceStatus.READY, NOW - timedelta(minutes=10), None, kind)
        quotas.reserve(live)
        records.add(live)


class Reads:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.items = 0

    def watch(self, client: Any) -> None:
        def after(model: Any, parsed: dict, **_: Any) -> None:
            self.calls[model.name] += 1
            batch = sum(len(found) for found in parsed.get("Responses", {}).values())
            self.items += int(parsed.get("ScannedCount", 1 if parsed.get("Item") else batch))

        client.meta.events.register("after-call", after)


def timed(client: Client, path: str, repeats: int) -> tuple[float, dict]:
    headers = {"Authorization": "Bearer dev:alice", "Content-Type": "application/json"}
    seconds = []
    body: dict = {}
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.http.get(path, headers=headers)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, response.body
        import json

        body = json.loads(response.body)
    return statistics.median(seconds), body


def measure(history: int, repeats: int) -> dict[str, tuple[float, int, dict]]:
    import app

    results: dict[str, tuple[float, int, dict]] = {}
    with emulated_aws(clock=Clock()) as aws:
        import boto3

        control = boto3.client("dynamodb", region_name=REGION)
        container = Container(settings=aws.settings, clock=Clock(),
                              aws_client=lambda service, region: control
                              if service == "dynamodb" else boto3.client(service,
                                                                         region_name=region),
                              azure_connection=aws.azure)
        bootstrap.use(container)
        started = time.perf_counter()
        seed(container, history)
        print(f"  seeded {history} finished + {LIVE} live in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        reads = Reads()
        reads.watch(InstanceModel._get_connection().connection.client)
        reads.watch(control)
        with Client(app.app) as client:
            timed(client, "/api/instances/stats", 1)  # warm
            for name, path in (
                ("stats", "/api/instances/stats"),
                ("list", "/api/instances?status=READY&limit=50"),
                ("costs", "/api/costs?from=2026-03-01&to=2026-04-01&groupBy=day"),
            ):
                reads.calls.clear()
                reads.items = 0
                times = 1 if name == "costs" else repeats  # the report is slow: once
                seconds, body = timed(client, path, times)
                results[name] = (seconds, reads.items // times, body)
        bootstrap.use(None)
    return results


def main() -> None:
    history = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    small = measure(100, repeats)
    large = measure(history, repeats)
    assert large["stats"][2]["byStatus"]["TERMINATED"] == history
    assert len(large["list"][2]["items"]) == LIVE
    for name in ("stats", "list", "costs"):
        (s_small, i_small, _), (s_large, i_large, _) = small[name], large[name]
        print(f"{name}: {s_small * 1000:.1f} ms reading {i_small} items with 100 finished; "
              f"{s_large * 1000:.1f} ms reading {i_large} items with {history}: "
              f"ratio {s_large / s_small:.2f}")
    print(f"cost report of the month (groupBy=day) over {history} records: "
          f"{large['costs'][0]:.2f} s, total {large['costs'][2]['totalUsd']} USD")


if __name__ == "__main__":
    main()
