"""Lifecycle (transitions, events, releases) on in-memory twins."""

from __future__ import annotations

import pytest

from chalicelib.domain.errors import ConcurrentUpdateError
from chalicelib.domain.states import InstanceStatus
from chalicelib.providers.base import CloudThrottlingError


def test_a_move_writes_once_and_publishes_its_event_or_defers_it(world):
    instance = world.provision()
    deferred: list = []

    moved = world.lifecycle.move(instance, InstanceStatus.ERROR, "test", deferred=deferred)

    assert world.repository.stored(instance.id) == moved
    assert [e.detail_type for e in deferred] == ["Instance Error"]
    assert world.events.detail_types() == ["Instance Provisioning"]


def test_a_move_from_a_stale_read_is_refused_and_publishes_nothing(world):
    instance = world.provision()
    world.lifecycle.move(instance, InstanceStatus.CONFIGURING)

    with pytest.raises(ConcurrentUpdateError):
        world.lifecycle.move(instance, InstanceStatus.ERROR, "late")
    assert world.events.detail_types() == ["Instance Provisioning"]


def test_fail_releases_the_machine_found_by_its_tag_and_bills_it(world):
    instance, _ = world.launched()
    world.clock.advance(minutes=3)

    failed = world.lifecycle.fail(world.repository.stored(instance.id), "stuck")

    assert failed.status is InstanceStatus.ERROR
    assert failed.billing_ended_at == world.clock()
    assert not world.cloud.machine_for(instance.id).state.is_present


def test_a_release_the_cloud_refuses_leaves_the_record_live_for_a_retry(world):
    instance, _ = world.launched()
    world.cloud.failures.fail("terminate", CloudThrottlingError("slow down (Throttling)"))

    with pytest.raises(CloudThrottlingError):
        world.lifecycle.fail(world.repository.stored(instance.id), "stuck")
    assert world.status_of(instance) is InstanceStatus.PROVISIONING


def test_release_and_store_of_a_record_with_no_machine_changes_nothing(world):
    instance = world.provision()

    assert world.lifecycle.release_and_store(instance) == instance
    assert world.cloud.calls == ["find_for_record"]
