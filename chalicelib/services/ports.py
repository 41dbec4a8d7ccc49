"""The outbound ports services depend on, besides the repository and the cloud providers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from chalicelib.domain.events import Event
from chalicelib.providers.base import CloudProvider

Clock = Callable[[], datetime]


class EventPublisher(Protocol):
    def publish_many(self, events: Sequence[Event]) -> None:
        """Put the events on the bus in as few calls as it allows; raises if it refused any
        (after trying them all)."""
        ...


class WorkflowStarter(Protocol):
    def execution_id(self, execution_name: str) -> str:
        """The id (ARN) the execution called `execution_name` has once started."""
        ...

    def start(self, execution_name: str, execution_input: Mapping[str, object]) -> str:
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


class Leases(Protocol):
    def acquire(self, name: str, holder: str, now: datetime, duration: timedelta) -> bool:
        """Take the lease `name` for `holder` until `now + duration`; False if another holder
        has it and it has not expired."""
        ...

    def release(self, name: str, holder: str) -> None:
        """Give the lease back (a no-op if it is no longer `holder`'s)."""
        ...
