"""Figures that don't read history: stats from the finished totals kept at each finish and
the live records, and lists that read only the records they answer with."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.domain.states import InstanceStatus
from chalicelib.domain.stats import summarize
from tests.conftest import START
from tests.functional.test_cost_report import finished_record


@pytest.fixture
def items_read(aws) -> list[tuple[str, int]]:
    """(operation, items read) of every DynamoDB call of the records and the control table."""
    from chalicelib.persistence.dynamodb import InstanceModel

    reads: list[tuple[str, int]] = []

    def count(model: Any, parsed: dict, **_: Any) -> None:
        batch = sum(len(found) for found in parsed.get("Responses", {}).values())
        reads.append((model.name, parsed.get("ScannedCount", 1 if parsed.get("Item") else batch)))

    container = bootstrap.container()
    _ = container.repository
    InstanceModel._get_connection().connection.client.meta.events.register("after-call", count)
    container.quotas.store.client.meta.events.register("after-call", count)
    return reads


def history(count: int, user: str = "alice", task: str | None = None) -> list:
    """`count` instances provisioned and finished through the service's own paths: the quota
    reservation, the record, and a transition to TERMINATED (which releases the usage and
    adds the instance to the finished totals)."""
    container = bootstrap.container()
    g4dn = container.catalog.find("g4dn.xlarge")
    finished = []
    for n in range(count):
        launched = START - timedelta(days=20, hours=n)
        record = replace(
            finished_record(g4dn, launched, launched + timedelta(minutes=30)),
            user_id=user, task_id=task, status=InstanceStatus.PROVISIONING, terminated_at=None,
        )
        container.quotas.reserve(record)
        stored = container.repository.add(record)
        finished.append(container.lifecycle.move(stored, InstanceStatus.TERMINATED, "test"))
    return finished


def test_stats_come_from_the_totals_and_agree_with_reading_every_record(
    api, aws, clock, items_read
):
    history(30)
    history(5, user="bob")
    api.provision(instanceType="p3.2xlarge")
    aws.wait_for_workflows()
    clock.advance(minutes=20)
    items_read.clear()

    status, stats, _ = api.call("GET", "/api/instances/stats")
    read_by_stats = sum(items for _, items in items_read)

    assert status == 200
    assert read_by_stats == 2  # the totals item, the live record
    assert (stats["byStatus"]["TERMINATED"], stats["byStatus"]["READY"]) == (30, 1)
    assert stats["total"] == 31
    every = summarize(bootstrap.container().records.all_for_stats("alice"), clock(), ["aws"])
    assert stats["totalCostUsd"] == str(every.total_cost)
    # Billed as one sum per rule rather than per instance: rounding apart, half a
    # micro-dollar per instance at most.
    gap = abs(Decimal(stats["alwaysOnCostUsd"]) - every.always_on_cost)
    assert gap <= Decimal("0.0000005") * every.total
    assert stats["periodStart"] == every.period_start.isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    _, fleet, _ = api.call("GET", "/api/instances/stats", user="ops:admin")
    assert fleet["byStatus"]["TERMINATED"] == 35


def test_a_finished_instance_is_counted_once_whatever_repeats_its_release(api, aws):
    [finished] = history(1)
    bootstrap.container().quotas.release(finished)
    bootstrap.container().quotas.release(finished)

    _, stats, _ = api.call("GET", "/api/instances/stats")

    assert stats["byStatus"]["TERMINATED"] == 1
    assert stats["totalCostUsd"] == str(finished.accrued_cost)


def test_a_late_bill_and_the_first_release_count_the_bill_once_in_either_order(
    api, aws, faults
):
    """A finished record billed again (a machine of it found) while its first release has
    not been written yet: the re-billing write counts the new bill whole, and the first
    release, coming second, finds nothing to count. The other order: test_cloud_truth."""
    container = bootstrap.container()
    g4dn = container.catalog.find("g4dn.xlarge")
    launched = START - timedelta(days=2)
    record = replace(finished_record(g4dn, launched, launched + timedelta(minutes=30)),
                     status=InstanceStatus.PROVISIONING, terminated_at=None)
    container.quotas.reserve(record)
    stored = container.repository.add(record)
    faults.fail("dynamodb", "UpdateItem", "AccessDeniedException")  # the first release
    finished = container.lifecycle.move(stored, InstanceStatus.TERMINATED, "test")
    assert container.quotas.store.usage("alice")[1] == frozenset({finished.id})  # still held
    rebilled = replace(finished, billing_ended_at=finished.billing_ended_at + timedelta(
        minutes=30)).with_cost_accrued(finished.billing_ended_at + timedelta(minutes=30))
    assert rebilled.accrued_cost > finished.accrued_cost

    container.repository.save(rebilled, expected_status=InstanceStatus.TERMINATED)
    container.quotas.release(finished)  # the first release's write, late, with the old bill

    _, stats, _ = api.call("GET", "/api/instances/stats")
    assert stats["totalCostUsd"] == str(rebilled.accrued_cost)
    assert stats["byStatus"]["TERMINATED"] == 1


def test_a_status_filtered_list_reads_only_the_matching_records(api, aws, items_read):
    history(40)
    ready = [api.provision()["id"] for _ in range(2)]
    aws.wait_for_workflows()
    items_read.clear()

    _, page, _ = api.call("GET", "/api/instances?status=READY&limit=50")

    assert sorted(i["id"] for i in page["items"]) == sorted(ready)
    assert sum(items for name, items in items_read if name == "Query") == 2


def test_a_task_filtered_list_reads_only_the_tasks_records(api, aws, items_read):
    history(40)
    history(3, task="scan-7")
    items_read.clear()

    _, page, _ = api.call("GET", "/api/instances?taskId=scan-7")

    assert len(page["items"]) == 3
    assert sum(items for name, items in items_read if name == "Query") == 3


def test_an_operators_unfiltered_list_reads_no_more_than_a_page(api, aws, items_read):
    history(30)
    items_read.clear()

    _, page, _ = api.call("GET", "/api/instances?limit=10", user="ops:admin")

    assert len(page["items"]) == 10 and page["nextCursor"]
    assert sum(items for name, items in items_read if name == "Scan") <= 10
