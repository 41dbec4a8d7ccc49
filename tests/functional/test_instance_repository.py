"""The DynamoDB repository (real PynamoDB against moto): conditional writes and the indexes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib import bootstrap
from chalicelib.domain.catalog import load_catalog
from chalicelib.domain.errors import ConcurrentUpdateError, InvalidTransitionError
from chalicelib.domain.instance import Instance, StatusChange
from chalicelib.domain.states import InstanceStatus

START = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)



def new_record(record_id: str = "inst-" + "a" * 32, user: str = "alice") -> Instance:
    kind = load_catalog().find("g4dn.xlarge")
    return Instance(
        id=record_id, user_id=user, provider="aws", region="us-east-1",
        instance_type=kind.name, gpu_model=kind.gpu_model, gpu_count=kind.gpu_count,
        hourly_usd=kind.hourly_usd, billing_rule=kind.billing_rule, idle_timeout_minutes=30,
        status=InstanceStatus.PROVISIONING, created_at=START, updated_at=START,
        status_entered_at=START, last_activity_at=START,
        status_history=(StatusChange(InstanceStatus.PROVISIONING, START),),
        metadata={"nested": {"list": [1, "two"]}},
    )


@pytest.fixture
def repository(aws):
    return bootstrap.container().repository


def test_a_record_reads_back_exactly_as_written(repository):
    record = replace(new_record(), launched_at=START, hourly_usd=Decimal("0.526"))
    stored = repository.add(record)

    assert repository.get(record.id) == stored
    assert stored.hourly_usd == Decimal("0.526")
    assert stored.metadata == {"nested": {"list": [1, "two"]}}


def test_adding_the_same_id_twice_is_refused(repository):
    repository.add(new_record())
    with pytest.raises(ConcurrentUpdateError):
        repository.add(new_record())


def test_a_raced_transition_is_refused_and_leaves_the_winner_intact(repository):
    stored = repository.add(new_record())
    first = stored.transition(InstanceStatus.CONFIGURING, START + timedelta(seconds=5))
    second = stored.transition(InstanceStatus.STOPPING, START + timedelta(seconds=6), "user")

    repository.save(first, expected_status=InstanceStatus.PROVISIONING)
    with pytest.raises(ConcurrentUpdateError):
        repository.save(second, expected_status=InstanceStatus.PROVISIONING)

    current = repository.get(stored.id)
    assert current.status is InstanceStatus.CONFIGURING
    assert [c.status for c in current.status_history] == [
        InstanceStatus.PROVISIONING, InstanceStatus.CONFIGURING,
    ]


def test_a_transition_the_lifecycle_forbids_never_reaches_the_table(repository):
    stored = repository.add(new_record())
    with pytest.raises(InvalidTransitionError):
        stored.transition(InstanceStatus.RUNNING, START)
    assert repository.get(stored.id) == stored


def test_live_index_holds_only_live_records_and_due_finds_the_expired(repository):
    live = repository.add(new_record("inst-" + "1" * 32))
    finished = repository.add(new_record("inst-" + "2" * 32))
    repository.save(
        finished.transition(InstanceStatus.ERROR, START, "test"),
        expected_status=InstanceStatus.PROVISIONING,
    )

    assert [i.id for i in repository.live(InstanceStatus.PROVISIONING)] == [live.id]
    assert list(repository.live(InstanceStatus.ERROR)) == []
    # PROVISIONING is due 15 minutes (the default limit) after it was entered.
    assert list(repository.due(InstanceStatus.PROVISIONING, START + timedelta(minutes=14))) == []
    due = repository.due(InstanceStatus.PROVISIONING, START + timedelta(minutes=15))
    assert [i.id for i in due] == [live.id]
