"""What `make run` prints: one line per transition (time, instance, user, type, FROM -> TO,
reason), one per action that changed something (the reaper's or the release workflow's, a
machine's agent), warnings and errors from anything; nothing else. With LOG_LEVEL=DEBUG
also the metrics lines, the access log, the reaper's tick summaries and the libraries' INFO
lines (credentials found, the Azure SDK's HTTP dumps)."""

from __future__ import annotations

import logging
import sys
import warnings
from datetime import UTC, datetime
from typing import TextIO

from chalicelib import logs
from local.server import ACCESS_LOG

# The local run's own loggers.
AGENT = "agent"  # the machines' agents (local/agents.py)
ACCESS = ACCESS_LOG  # the API's access log (one line per request)
METRICS = "metrics"  # the reaper's EMF documents
TICKS = "reaper"  # the reaper timer: a tick's summary, a failed tick
STORY = frozenset({logs.TRANSITIONS.name, logs.ACTIONS.name, AGENT})


class StoryOnly(logging.Filter):
    """The story (transitions, actions, agents) and anything at WARNING or above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name in STORY or record.levelno >= logging.WARNING


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        fields = record.__dict__
        if record.name == logs.TRANSITIONS.name:
            reason = fields.get("reason")
            line = (
                f"{stamp}  {fields['instance_id']}  {fields['user_id']}  "
                f"{fields['instance_type']}  {fields['from_status'] or 'new'} -> "
                f"{fields['to_status']}{f'  ({reason})' if reason else ''}"
            )
        elif record.name == logs.ACTIONS.name:
            detail = fields.get("detail")
            line = f"{stamp}  {fields['instance_id']}  {fields['action']}" + (
                f": {detail}" if detail else ""
            )
        elif record.name == AGENT:
            line = f"{stamp}  agent  {record.getMessage()}"
        else:
            level = "" if record.levelno == logging.INFO else f"{record.levelname} "
            line = f"{stamp}  {level}{record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """The console handler on the root logger; LOG_LEVEL=DEBUG shows everything."""
    debug = level.upper() == "DEBUG"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(ConsoleFormatter())
    if not debug:
        handler.addFilter(StoryOnly())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in (ACCESS, METRICS, TICKS):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.INFO)
    logs.quiet_libraries(level)
    # Chalice's local gateway warns on every request that it does not run our authorizer and
    # lets every request through: not so here, the local stage checks its dev tokens itself.
    warnings.filterwarnings(
        "ignore", message=r".*is not a supported in local mode", category=UserWarning
    )
    return handler
