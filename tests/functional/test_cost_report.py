"""GET /api/costs: what was billed inside a window, grouped, as JSON or CSV, read through an
index on time rather than the whole history."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.domain.catalog import load_catalog
from chalicelib.domain.ids import new_instance_id
from chalicelib.domain.instance import Instance
from chalicelib.domain.states import InstanceStatus
from tests.conftest import START


def run_for(api, aws, clock, hours: float, user: str = "alice", **body) -> dict:
    """An instance provisioned now, used for `hours`, then stopped: its finished record."""
    instance = api.provision(user=user, **body)
    aws.wait_for_workflows()
    clock.advance(hours=hours)
    status, _, _ = api.call("DELETE", f"/api/instances/{instance['id']}", user=user)
    assert status == 202
    aws.wait_for_workflows()
    return api.get(instance["id"], user=user)


def costs(api, query: str, user: str = "alice") -> tuple[int, Any]:
    status, body, _ = api.call("GET", "/api/costs?" + query, user=user)
    return status, body


def test_a_covering_window_totals_the_records_costs_and_a_user_sees_only_their_own(
    api, aws, clock
):
    mine = [
        run_for(api, aws, clock, 1, instanceType="g4dn.xlarge", taskId="scan-1"),
        run_for(api, aws, clock, 0.5, instanceType="p3.2xlarge", taskId="scan-1"),
        run_for(api, aws, clock, 2, instanceType="g4dn.xlarge"),
    ]
    theirs = run_for(api, aws, clock, 3, user="bob", instanceType="p3.2xlarge")
    window = "from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z"

    status, report = costs(api, window + "&groupBy=instanceType")

    assert status == 200
    assert report["from"] == "2026-03-02T00:00:00.000Z"
    assert report["groupBy"] == "instanceType"
    assert report["totalUsd"] == str(sum(Decimal(r["costUsd"]) for r in mine))
    assert [(g["key"], g["instances"], g["billedSeconds"]) for g in report["groups"]] == [
        ("g4dn.xlarge", 2, 3 * 3600), ("p3.2xlarge", 1, 1800),
    ]
    assert {g["key"] for g in costs(api, window + "&groupBy=task")[1]["groups"]} == {
        "scan-1", None,
    }
    _, everyone = costs(api, window + "&groupBy=user", user="ops:admin")
    assert [(g["key"], g["costUsd"]) for g in everyone["groups"]] == [
        ("alice", report["totalUsd"]), ("bob", theirs["costUsd"]),
    ]
    _, only_bob = costs(api, window + "&userId=bob", user="ops:admin")
    assert only_bob["totalUsd"] == theirs["costUsd"]


def test_a_window_counts_only_the_part_of_a_run_inside_it_and_a_live_one_to_now(
    api, aws, clock
):
    finished = run_for(api, aws, clock, 2)  # billed 09:00-11:00
    live = api.provision()  # from 11:00, still running
    aws.wait_for_workflows()
    clock.advance(minutes=30)

    _, report = costs(api, "from=2026-03-02T10:00:00Z&to=2026-03-02T12:00:00Z")

    [group] = report["groups"]
    assert (group["billedSeconds"], group["instances"]) == (3600 + 1800, 2)
    assert group["costUsd"] == "0.789000"  # 1.5 h at 0.526 USD/h
    assert finished["costUsd"] == "1.052000" and live["id"]


def test_day_groups_split_an_instance_across_days(api, aws, clock):
    clock.advance(hours=13)  # 22:00
    run_for(api, aws, clock, 3)

    _, report = costs(api, "from=2026-03-02&to=2026-03-04&groupBy=day")

    assert [(g["key"], g["billedSeconds"]) for g in report["groups"]] == [
        ("2026-03-02", 7200), ("2026-03-03", 3600),
    ]


def test_accept_text_csv_answers_the_same_report_as_csv(api, aws, clock):
    run_for(api, aws, clock, 1, taskId="scan-1")
    response = api.client.http.get(
        "/api/costs?from=2026-03-02&to=2026-03-03&groupBy=task",
        headers={"Authorization": "Bearer dev:alice", "Accept": "text/csv"},
    )

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.body.decode())))
    assert rows == [
        ["from", "to", "groupBy", "key", "costUsd", "billedSeconds", "instances"],
        ["2026-03-02T00:00:00.000Z", "2026-03-03T00:00:00.000Z", "task", "scan-1",
         "0.526000", "3600", "1"],
        ["2026-03-02T00:00:00.000Z", "2026-03-03T00:00:00.000Z", "total", "", "0.526000",
         "3600", "1"],
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("groupBy=colour", "groupBy"),
        ("from=yesterday", "from"),
        ("from=2026-03-02T00:00:00", "from"),  # no offset
        ("from=2026-03-02&to=2026-03-01", "to"),
        ("from=2026-01-01&to=2026-06-01", "to"),  # longer than 92 days
        ("userId=bob", "userId"),  # not an operator
        ("colour=red", "colour"),
    ],
)
def test_bad_parameters_answer_400_naming_the_parameter(api, aws, query, field):
    status, problem = costs(api, query)

    assert (status, problem["error"]) == (400, "invalid_request"), problem
    assert problem["fields"][0]["field"] == field


def test_the_report_reads_the_records_of_its_window_not_the_history(api, aws, clock):
    from chalicelib.persistence.dynamodb import InstanceModel

    repository = bootstrap.container().repository
    g4dn = load_catalog().find("g4dn.xlarge")
    for day in range(300):  # 300 days of history up to 10 days ago, an hour-long run a day
        launched = START - timedelta(days=310 - day)
        repository.add(finished_record(g4dn, launched, launched + timedelta(hours=1)))
    in_window = run_for(api, aws, clock, 1)
    read: list[tuple[str, int]] = []

    def count(model: Any, parsed: dict, **_: Any) -> None:
        read.append((model.name, parsed.get("ScannedCount", 0)))

    InstanceModel._get_connection().connection.client.meta.events.register(
        "after-call", count
    )
    _, report = costs(api, "from=2026-03-01&to=2026-03-03")

    assert report["totalUsd"] == in_window["costUsd"]
    assert {name for name, _ in read} == {"Query"}
    assert sum(items for _, items in read) <= 2  # the run, and its record in the live index


def finished_record(instance_type: Any, launched, ended) -> Instance:
    return Instance(
        id=new_instance_id(), user_id="alice", provider="aws", region="us-east-1",
        instance_type=instance_type.name, gpu_model=instance_type.gpu_model,
        gpu_count=instance_type.gpu_count, hourly_usd=instance_type.hourly_usd,
        billing_rule=instance_type.billing_rule, idle_timeout_minutes=30,
        status=InstanceStatus.TERMINATED, created_at=launched, updated_at=ended,
        status_entered_at=ended, last_activity_at=launched, launched_at=launched,
        billing_ended_at=ended, terminated_at=ended,
    )


