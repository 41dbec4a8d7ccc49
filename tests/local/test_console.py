"""`make run`'s console: the story (transitions, actions, agents) and what went wrong; the
metrics, the access log and the SDKs' chatter only with LOG_LEVEL=DEBUG."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from chalicelib import logs, metrics
from chalicelib.services.reaper import TickReport
from local import console

AT = datetime(2026, 3, 2, tzinfo=UTC)

@pytest.fixture
def printed() -> Iterator[Callable[[str], str]]:
    """Configure the console at a level into a buffer; returns what a burst of typical
    lines printed. Logging and the metrics destination are restored afterwards."""
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    names = (*logs.CHATTY_LIBRARIES, console.ACCESS, console.METRICS, console.TICKS)
    levels = {name: logging.getLogger(name).level for name in names}

    def run(level: str) -> str:
        stream = io.StringIO()
        console.configure(level, stream)
        metrics.send_lines_to(logging.getLogger(console.METRICS).debug)
        logs.transition("inst-1", "alice", "g4dn.xlarge", "CONFIGURING", "READY", None, "arn:e")
        logs.transition("inst-1", "alice", "g4dn.xlarge", "READY", "STOPPING", "idle_timeout",
                        "arn:e")
        logs.action("terminate sent", "inst-1", "machine i-0abc")
        logging.getLogger(console.AGENT).info("inst-1: GPUs busy")
        metrics.emit(metrics.tick_records(TickReport(), "local", AT))
        logging.getLogger(console.ACCESS).debug('127.0.0.1 "POST /api/instances HTTP/1.1" 202 -')
        logging.getLogger(console.TICKS).debug("tick: {}")
        logging.getLogger("botocore.credentials").info("Found credentials in environment")
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info(
            "Request URL: 'https://127.0.0.1/token'"
        )
        logging.getLogger("chalicelib.services.reconciler").error("could not stop inst-2")
        return stream.getvalue()

    try:
        yield run
    finally:
        metrics.send_lines_to(None)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_the_console_prints_transitions_actions_agents_and_errors_only(printed):
    lines = printed("INFO").splitlines()

    assert [line[8:] for line in lines] == [
        "  inst-1  alice  g4dn.xlarge  CONFIGURING -> READY",
        "  inst-1  alice  g4dn.xlarge  READY -> STOPPING  (idle_timeout)",
        "  inst-1  terminate sent: machine i-0abc",
        "  agent  inst-1: GPUs busy",
        "  ERROR chalicelib.services.reconciler: could not stop inst-2",
    ]
    assert all(line[2] == ":" and line[5] == ":" for line in lines)  # HH:MM:SS first


def test_log_level_debug_adds_metrics_access_log_ticks_and_the_sdks_lines(printed):
    text = printed("DEBUG")

    assert '"_aws"' in text and "LiveInstances" in text
    assert '"POST /api/instances HTTP/1.1" 202' in text
    assert "tick: {}" in text
    assert "Found credentials" in text
    assert "Request URL" in text
    assert "READY -> STOPPING" in text
