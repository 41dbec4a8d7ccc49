"""Publishes lifecycle events to an EventBridge bus."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chalicelib.domain.events import EVENT_SOURCE, Event

if TYPE_CHECKING:
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

logger = logging.getLogger(__name__)

# PutEvents takes at most 10 entries per call.
PUT_EVENTS_BATCH = 10


class EventPublishError(Exception):
    """EventBridge refused an event (it reports failures per entry, not as an exception)."""


class EventBridgePublisher:
    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish_many(self, events: Sequence[Event]) -> None:
        refused: list[str] = []
        for start in range(0, len(events), PUT_EVENTS_BATCH):
            batch = events[start : start + PUT_EVENTS_BATCH]
            response = self._client.put_events(Entries=[self._entry(e) for e in batch])
            if not response.get("FailedEntryCount", 0):
                continue
            for event, entry in zip(batch, response.get("Entries", []), strict=False):
                if entry.get("ErrorCode"):
                    logger.error(
                        "%s refused by %s: %s %s", event.detail_type, self._bus_name,
                        entry.get("ErrorCode"), entry.get("ErrorMessage"),
                    )
                    refused.append(event.detail_type)
        if refused:
            raise EventPublishError(f"{len(refused)} event(s) refused: {', '.join(refused)}")

    def _entry(self, event: Event) -> PutEventsRequestEntryTypeDef:
        return {
            "Source": EVENT_SOURCE,
            "DetailType": event.detail_type,
            "Detail": json.dumps(event.detail, default=str),
            "EventBusName": self._bus_name,
        }
