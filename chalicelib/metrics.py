"""CloudWatch metrics as Embedded Metric Format lines on stdout (Lambda ships them to Logs)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TextIO

from chalicelib.domain.states import LIVE_STATUSES
from chalicelib.services.reaper import TickReport

NAMESPACE = "InstanceProvisioner"
# Metric names the deployment's alarms and dashboard refer to (.chalice/merge-template.json).
LIVE_INSTANCES = "LiveInstances"
BURN_RATE = "BurnRateUsdPerHour"
STUCK_INSTANCES = "StuckInstances"
REAPER_FAILURES = "ReaperFailures"
ORPHANS_TERMINATED = "OrphansTerminated"
TERMINATED_OUTSIDE_SERVICE = "TerminatedOutsideService"

# Where emit() writes when given no stream: stdout (Lambda ships it to CloudWatch Logs), or
# what send_lines_to() set (`make run` logs the lines at DEBUG).
_line_sink: Callable[[str], None] | None = None

COUNT = "Count"
NO_UNIT = "None"


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str = COUNT


def emf_record(
    metrics: Iterable[Metric], dimensions: Mapping[str, str], timestamp: datetime
) -> dict[str, Any]:
    """One EMF document: the metrics share one timestamp and one set of dimensions.

    https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
    """
    metrics = list(metrics)
    return {
        "_aws": {
            "Timestamp": int(timestamp.timestamp() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [sorted(dimensions)],
                    "Metrics": [{"Name": m.name, "Unit": m.unit} for m in metrics],
                }
            ],
        },
        **dimensions,
        **{m.name: m.value for m in metrics},
    }


def tick_records(report: TickReport, stage: str, at: datetime) -> list[dict[str, Any]]:
    """What one reaper tick saw: live instances per status (zero included, so a graph or
    an alarm sees 0 rather than missing data), the burn rate, stuck records and failures."""
    records = [
        emf_record(
            [Metric(LIVE_INSTANCES, report.live_by_status.get(status.value, 0))],
            {"Stage": stage, "Status": status.value},
            at,
        )
        for status in LIVE_STATUSES
    ]
    records.append(
        emf_record(
            [
                Metric(BURN_RATE, _number(report.burn_rate_usd_per_hour), NO_UNIT),
                # Stuck now: STOPPING past its limit (kept live, terminate re-sent) and the
                # starting records failed this tick for being stuck.
                Metric(
                    STUCK_INSTANCES, report.stuck_stopping + len(report.outcome.failed_stuck)
                ),
                Metric(REAPER_FAILURES, sum((report.failures + report.outcome.failures).values())),
                Metric(ORPHANS_TERMINATED, len(report.outcome.orphans_terminated)),
                Metric(
                    TERMINATED_OUTSIDE_SERVICE, len(report.outcome.finished_outside_service)
                ),
            ],
            {"Stage": stage},
            at,
        )
    )
    return records


def send_lines_to(sink: Callable[[str], None] | None) -> None:
    """Hand each EMF line to `sink` instead of stdout (None: stdout again)."""
    global _line_sink
    _line_sink = sink


def emit(records: Iterable[Mapping[str, Any]], stream: TextIO | None = None) -> None:
    """Write each record as one JSON line (the form CloudWatch Logs extracts metrics from)."""
    if stream is None and _line_sink is not None:
        for record in records:
            _line_sink(json.dumps(record, separators=(",", ":")))
        return
    out = stream or sys.stdout
    for record in records:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
    out.flush()


def _number(value: Decimal) -> float:
    # EMF values are JSON numbers; a rate in dollars per hour loses nothing that matters.
    return float(value)
