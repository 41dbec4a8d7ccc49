"""The outbound ports services depend on, besides the repository and the cloud providers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from chalicelib.providers.base import CloudProvider

Clock = Callable[[], datetime]


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Put one event on the bus; raises if the bus refused it."""
        ...


class WorkflowStarter(Protocol):
    def execution_id(self, execution_name: str) -> str:
        """The id (ARN) the execution called `execution_name` has once started."""
        ...

    def start(self, execution_name: str, execution_input: dict[str, Any]) -> str:
        """Start the lifecycle workflow; returns the execution id (ARN)."""
        ...


class ProviderRegistry(Protocol):
    def get(self, name: str) -> CloudProvider:
        """The provider called `name`; ProviderUnavailableError if it is not configured."""
        ...

    def available(self) -> set[str]:
        """The providers this deployment is configured to use."""
        ...

    def region_for(self, name: str) -> str:
        """The region this deployment provisions in for provider `name`."""
        ...
