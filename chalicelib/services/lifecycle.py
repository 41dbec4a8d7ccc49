"""Transitions shared by the API, the workflow steps and the reaper: write, announce, release."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from chalicelib import logs
from chalicelib.domain.events import DETAIL_TYPE_BY_STATUS, Event
from chalicelib.domain.instance import Instance
from chalicelib.domain.states import InstanceStatus
from chalicelib.persistence.repository import InstanceRepository
from chalicelib.services.ports import Clock, EventPublisher, ProviderRegistry
from chalicelib.services.views import instance_view

logger = logging.getLogger(__name__)


class Lifecycle:
    def __init__(
        self,
        repository: InstanceRepository,
        providers: ProviderRegistry,
        events: EventPublisher,
        clock: Clock,
    ) -> None:
        self.repository = repository
        self.providers = providers
        self.events = events
        self.clock = clock

    def move(
        self,
        instance: Instance,
        target: InstanceStatus,
        reason: str | None = None,
        deferred: list[Event] | None = None,
        **changes: Any,
    ) -> Instance:
        """One conditional write of a transition, then its event (if the status has one).
        With `deferred`, the event is appended there for the caller to publish in a batch."""
        now = self.clock()
        moved = instance.transition(target, now, reason, **changes)
        stored = self.repository.save(moved, expected_status=instance.status)
        log_transition(instance.status, stored)
        event = self.event_for(stored)
        if event is not None:
            if deferred is not None:
                deferred.append(event)
            else:
                self.publish([event])
        return stored

    def announce(self, instance: Instance) -> None:
        """The event of a record's current status (a new record's, or one just failed)."""
        if len(instance.status_history) == 1:
            log_transition(None, instance)  # a new record
        event = self.event_for(instance)
        if event is not None:
            self.publish([event])

    def event_for(self, instance: Instance) -> Event | None:
        detail_type = DETAIL_TYPE_BY_STATUS.get(instance.status)
        if detail_type is None:
            return None
        return Event(detail_type, instance_view(instance, self.clock()))

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        try:
            self.events.publish_many(events)
        except Exception:
            # The transitions are stored; losing their notification must not undo them or
            # fail the caller. Logged loudly so the alarm on errors catches it.
            logger.exception("could not publish %d event(s)", len(events))

    def release_cloud_resources(self, instance: Instance) -> Instance:
        """Ask the cloud to delete whatever was launched for the record; returns the record
        with its machine and billing (from the cloud's own launch time) filled in, not yet
        saved. Nothing launched -> nothing to do. Raises CloudProviderError if the cloud
        would not take the request (the caller leaves the record live and tries again)."""
        provider = self.providers.get(instance.provider)
        resource_id = instance.cloud_resource_id
        launched_at = None
        if resource_id is None:
            # The launch may have reached the cloud without its id being stored: the tag says.
            found = provider.find_for_record(instance.id, instance.region)
            if found is None:
                return instance
            resource_id, launched_at = found.resource_id, found.launched_at
        provider.terminate(resource_id, instance.region)
        released = instance.with_cloud_launch(resource_id, launched_at)
        if released.billing_ended_at is None:
            released = released.with_billing_ended(self.clock())
        return released.with_terminate_requested(self.clock())

    def release_and_store(self, instance: Instance) -> Instance:
        """Release the record's machine and store what the release learnt (its id, its bill),
        whatever the record's status: a finished record whose machine a retried launch finds
        is billed for that machine too."""
        released = self.release_cloud_resources(instance)
        if released == instance:
            return instance
        if released.status.is_terminal:
            released = released.with_cost_accrued(self.clock())
        return self.repository.save(released, expected_status=instance.status)

    def fail(self, instance: Instance, reason: str) -> Instance:
        """Live -> ERROR, releasing the cloud machine first so an errored record never
        leaves a machine running (if the release fails, the record stays live and is retried)."""
        released = self.release_cloud_resources(instance)
        now = self.clock()
        failed = released.transition(InstanceStatus.ERROR, now, reason)
        stored = self.repository.save(failed, expected_status=instance.status)
        log_transition(instance.status, stored)
        self.announce(stored)
        return stored


def log_transition(before: InstanceStatus | None, stored: Instance) -> None:
    """The transitions logger's line for a stored status change (`before` None: created)."""
    logs.transition(
        stored.id, stored.user_id, stored.instance_type, before.value if before else None,
        stored.status.value, stored.status_reason, stored.execution_id,
    )
