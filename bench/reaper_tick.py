"""One reaper tick against the emulation: calls per live instance and seconds, for a fleet of
10 READY instances, of 5,000 none due, and of 5,000 of which 1,000 are idle-due.

Target (issue 8): cloud calls in batches, DynamoDB writes only for records that change, so
calls per instance stay far below one when nothing is due, and a due instance costs a few
writes, not a call of each kind; the 5,000 tick well inside the reaper's 120 s timeout.
Run: .venv/bin/python bench/reaper_tick.py [fleet] [due]"""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3  # noqa: E402

from chalicelib.bootstrap import Container  # noqa: E402
from chalicelib.domain.catalog import load_catalog  # noqa: E402
from chalicelib.domain.instance import Instance, StatusChange  # noqa: E402
from chalicelib.domain.states import InstanceStatus  # noqa: E402
from chalicelib.persistence.dynamodb import InstanceModel  # noqa: E402
from chalicelib.providers.base import DEPLOYMENT_TAG, MANAGED_TAG  # noqa: E402
from local.emulator import REGION, emulated_aws  # noqa: E402

START = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
LAUNCH_BATCH = 500


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class CallTimer:
    """Counts the AWS calls a client makes and the seconds spent in them (in the emulation,
    mostly moto's own work), so the tick's own time can be told apart."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds = 0.0
        self._started: dict[int, float] = {}

    def watch(self, client: Any, service: str) -> None:
        def before(model: Any, **_: Any) -> None:
            self.calls.update([f"{service}:{model.name}"])
            self._started[id(model)] = time.perf_counter()

        def after(model: Any, **_: Any) -> None:
            self.seconds += time.perf_counter() - self._started.pop(id(model), time.perf_counter())

        client.meta.events.register("before-call", before)
        client.meta.events.register("after-call", after)


def counted_client(timer: CallTimer) -> Any:
    def build(service: str, region: str) -> Any:
        client = boto3.client(service, region_name=region)
        timer.watch(client, service)
        return client

    return build


def seed(container: Container, count: int, due: int) -> None:
    """`count` READY instances with running machines; `due` of them idle past their timeout."""
    settings = container.settings
    ec2 = boto3.client("ec2", region_name=REGION)
    tags = [{"Key": MANAGED_TAG, "Value": "true"},
            {"Key": DEPLOYMENT_TAG, "Value": settings.deployment_name}]
    machines: list[str] = []
    while len(machines) < count:
        n = min(LAUNCH_BATCH, count - len(machines))
        answer = ec2.run_instances(
            ImageId=settings.ec2.ami_id, MinCount=n, MaxCount=n, InstanceType="g4dn.xlarge",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        machines += [i["InstanceId"] for i in answer["Instances"]]
    kind = load_catalog().find("g4dn.xlarge")
    repository = container.repository
    for n, machine in enumerate(machines):
        # The due ones last heard of 31 minutes before the tick, the others a minute before.
        active = START - timedelta(minutes=31 if n < due else 1)
        repository.add(Instance(
            id=f"inst-{n:032x}", user_id=f"user-{n % 50}", provider="aws", region=REGION,
            instance_type=kind.name, gpu_model=kind.gpu_model, gpu_count=kind.gpu_count,
            hourly_usd=kind.hourly_usd, billing_rule=kind.billing_rule, idle_timeout_minutes=30,
            status=InstanceStatus.READY, created_at=active, updated_at=active,
            status_entered_at=active, last_activity_at=active, cloud_resource_id=machine,
            launched_at=active - timedelta(minutes=5), accrued_cost=Decimal("0"),
            status_history=(StatusChange(InstanceStatus.READY, active),),
        ))


def measure(count: int, due: int) -> tuple[float, CallTimer, dict[str, Any]]:
    clock = Clock()
    with emulated_aws(clock=clock) as aws:
        timer = CallTimer()
        container = Container(
            settings=aws.settings, clock=clock, aws_client=counted_client(timer),
            azure_connection=aws.azure,
        )
        container.reaper.tick(clock())  # warm: imports, clients, the Azure sign-in
        seed(container, count, due)
        timer.watch(InstanceModel._get_connection().connection.client, "dynamodb")
        timer.calls.clear()
        timer.seconds = 0.0
        started = time.perf_counter()
        report = container.reaper.tick(clock())
        elapsed = time.perf_counter() - started
    return elapsed, timer, report.as_dict()


def main() -> None:
    fleet = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    due = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    rows = []
    for count, idle in ((10, 0), (fleet, 0), (fleet, due)):
        seconds, timer, report = measure(count, idle)
        assert len(report["terminatedIdle"]) == idle, report["terminatedIdle"][:3]
        rows.append((count, idle, seconds, timer.calls))
        total = sum(timer.calls.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(timer.calls.items()))
        print(f"{count} live, {idle} idle-due: {seconds:.2f} s, of which {timer.seconds:.2f} s "
              f"inside the emulated AWS calls; {total} calls ({total / count:.3f} per "
              f"instance): {detail}", flush=True)
    base_seconds = rows[0][2]
    for count, idle, seconds, _ in rows[1:]:
        print(f"ratio to the 10-live tick: {count} live / {idle} due = "
              f"{seconds / base_seconds:.1f}x the time for {count / 10:.0f}x the instances")


if __name__ == "__main__":
    main()
