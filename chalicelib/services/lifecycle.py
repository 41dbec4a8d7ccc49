"""Transitions shared by the API, the workflow steps and the reaper: write, announce, release."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from chalicelib.domain.events import DETAIL_TYPE_BY_STATUS
from chalicelib.domain.instance import Instance
from chalicelib.domain.states import InstanceStatus
from chalicelib.persistence.repository import InstanceRepository
from chalicelib.providers.base import CloudProviderError, CloudState
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
        self, instance: Instance, target: InstanceStatus, reason: str | None = None, **changes: Any
    ) -> Instance:
        """One conditional write of a transition, then its event (if the status has one)."""
        now = self.clock()
        moved = instance.transition(target, now, reason, **changes)
        stored = self.repository.save(moved, expected_status=instance.status)
        self.announce(stored)
        return stored

    def announce(self, instance: Instance) -> None:
        detail_type = DETAIL_TYPE_BY_STATUS.get(instance.status)
        if detail_type is None:
            return
        try:
            self.events.publish(detail_type, instance_view(instance, self.clock()))
        except Exception:
            # The transition is stored; losing its notification must not undo it or fail
            # the caller. Logged loudly so the alarm on errors catches it.
            logger.exception("could not publish %s for %s", detail_type, instance.id)

    def release_cloud_resources(self, instance: Instance) -> Instance:
        """Ask the cloud to delete whatever was launched for the record; returns the record
        with billing ended (not yet saved). Nothing launched -> nothing to do."""
        provider = self.providers.get(instance.provider)
        resource_id = instance.cloud_resource_id
        if resource_id is None:
            # The launch may have reached the cloud without its id being stored: the tag says.
            found = provider.find_for_record(instance.id, instance.region)
            resource_id = found.resource_id if found else None
        if resource_id is None:
            return instance
        provider.terminate(resource_id, instance.region)
        billing_ended_at = instance.billing_ended_at
        if billing_ended_at is None and instance.launched_at is not None:
            billing_ended_at = self.clock()
        return replace(instance, cloud_resource_id=resource_id, billing_ended_at=billing_ended_at)

    def begin_termination(self, instance: Instance, reason: str) -> Instance:
        """Live -> STOPPING, then ask the cloud to delete the machine (billing ends there)."""
        stopping = self.move(instance, InstanceStatus.STOPPING, reason)
        try:
            return self._release_and_store(stopping)
        except CloudProviderError:
            # The stop is recorded; the reaper asks the cloud again on its next tick.
            logger.exception("terminate request for %s failed; the reaper retries", instance.id)
            return stopping

    def confirm_termination(self, instance: Instance) -> Instance:
        """STOPPING -> TERMINATED once the cloud says the machine is gone."""
        asked_now = instance.billing_ended_at is None
        if asked_now:
            # No delete was accepted yet (the API only records the stop, or an earlier request
            # failed): ask now. With no id on the record, the tag finds a machine whose launch
            # raced the stop, so none is left running unrecorded.
            instance = self._release_and_store(instance)
        if instance.cloud_resource_id is not None:
            provider = self.providers.get(instance.provider)
            view = provider.describe(instance.cloud_resource_id, instance.region)
            if view.state is not CloudState.TERMINATED:
                if view.state is not CloudState.TERMINATING and not asked_now:
                    # A delete accepted on an earlier tick did not take (an asynchronous
                    # delete that failed): ask again rather than wait for ever.
                    provider.terminate(instance.cloud_resource_id, instance.region)
                return instance
        return self.move(instance, InstanceStatus.TERMINATED, instance.status_reason)

    def _release_and_store(self, instance: Instance) -> Instance:
        released = self.release_cloud_resources(instance)
        if released == instance:
            return instance
        return self.repository.save(released, expected_status=instance.status)

    def fail(self, instance: Instance, reason: str) -> Instance:
        """Live -> ERROR, releasing the cloud machine first so an errored record never
        leaves a machine running (if the release fails, the record stays live and is retried)."""
        released = self.release_cloud_resources(instance)
        now = self.clock()
        failed = released.transition(InstanceStatus.ERROR, now, reason)
        stored = self.repository.save(failed, expected_status=instance.status)
        self.announce(stored)
        return stored
