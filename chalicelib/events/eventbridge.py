"""Publishes lifecycle events to an EventBridge bus."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.domain.events import EVENT_SOURCE


class EventPublishError(Exception):
    """EventBridge refused the event (it reports failures per entry, not as an exception)."""


class EventBridgePublisher:
    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        response = self._client.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, default=str),
                    "EventBusName": self._bus_name,
                }
            ]
        )
        if response.get("FailedEntryCount", 0):
            entry = response["Entries"][0]
            raise EventPublishError(
                f"{detail_type} refused by {self._bus_name}: "
                f"{entry.get('ErrorCode')} {entry.get('ErrorMessage')}"
            )
