"""The reaper's CloudWatch metrics: Embedded Metric Format documents, one JSON line each."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

from chalicelib import metrics
from chalicelib.services.reaper import TickReport

AT = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


def by_metric(records: list[dict], name: str) -> dict[str, object]:
    return {r.get("Status", "-"): r[name] for r in records if name in r}


def test_an_emf_record_declares_its_metrics_and_carries_their_values_at_the_root():
    record = metrics.emf_record(
        [metrics.Metric("LiveInstances", 3)], {"Stage": "prod", "Status": "READY"}, AT
    )

    assert record == {
        "_aws": {
            "Timestamp": 1772442000000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "InstanceProvisioner",
                    "Dimensions": [["Stage", "Status"]],
                    "Metrics": [{"Name": "LiveInstances", "Unit": "Count"}],
                }
            ],
        },
        "Stage": "prod",
        "Status": "READY",
        "LiveInstances": 3,
    }


def test_a_tick_publishes_live_instances_for_every_live_status_zero_included():
    report = TickReport(live_by_status=Counter({"READY": 2, "PROVISIONING": 1}))

    records = metrics.tick_records(report, "prod", AT)

    assert by_metric(records, "LiveInstances") == {
        "PROVISIONING": 1, "CONFIGURING": 0, "READY": 2, "RUNNING": 0, "STOPPING": 0,
    }
    assert all(r["Stage"] == "prod" for r in records)


def test_a_tick_publishes_burn_rate_stuck_records_orphans_and_failures_per_stage():
    report = TickReport(
        failures=Counter({"list-aws": 1}),
        burn_rate_usd_per_hour=Decimal("4.438"),
        stuck_stopping=1,
    )
    report.outcome.failed_stuck.append("inst-a")
    report.outcome.failures["terminate"] += 2
    report.outcome.orphans_terminated.append("i-0abc")
    report.outcome.finished_outside_service.extend(["inst-b", "inst-c"])

    [fleet] = [r for r in metrics.tick_records(report, "dev", AT) if "Status" not in r]

    assert fleet["BurnRateUsdPerHour"] == 4.438
    assert fleet["StuckInstances"] == 2
    assert fleet["ReaperFailures"] == 3
    assert fleet["OrphansTerminated"] == 1
    assert fleet["TerminatedOutsideService"] == 2
    [declaration] = fleet["_aws"]["CloudWatchMetrics"]
    assert declaration["Dimensions"] == [["Stage"]]
    assert {m["Name"] for m in declaration["Metrics"]} == {
        "BurnRateUsdPerHour", "StuckInstances", "ReaperFailures", "OrphansTerminated",
        "TerminatedOutsideService",
    }


def test_emit_writes_one_compact_json_document_per_line():
    out = io.StringIO()
    records = metrics.tick_records(TickReport(), "prod", AT)

    metrics.emit(records, out)

    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == records
