"""The repository's contract, run against the DynamoDB adapter (real PynamoDB against moto)
and against its in-memory twin (tests/twins.py), which the use-case tests use: conditional
writes, versions, the indexes and the listing's cursors."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import boto3
import pytest

from chalicelib import bootstrap
from chalicelib.domain.catalog import load_catalog
from chalicelib.domain.errors import (
    ConcurrentUpdateError,
    InvalidTransitionError,
    ValidationError,
)
from chalicelib.domain.instance import Instance, StatusChange
from chalicelib.domain.states import InstanceStatus
from chalicelib.persistence.repository import ListQuery
from tests.twins import InMemoryInstanceRepository

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


@pytest.fixture(params=["dynamodb", "in-memory"])
def repository(request):
    if request.param == "in-memory":
        return InMemoryInstanceRepository()
    request.getfixturevalue("aws")
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


def test_a_write_from_a_stale_read_is_refused_even_with_the_same_status(repository):
    stored = repository.add(new_record())
    first_read, second_read = repository.get(stored.id), repository.get(stored.id)
    repository.save(replace(first_read, idle_timeout_minutes=45), InstanceStatus.PROVISIONING)

    with pytest.raises(ConcurrentUpdateError):
        repository.save(replace(second_read, idle_timeout_minutes=60), InstanceStatus.PROVISIONING)
    assert repository.get(stored.id).idle_timeout_minutes == 45


def test_each_write_returns_the_copy_the_next_write_must_start_from(repository):
    stored = repository.add(new_record())
    once = repository.save(replace(stored, idle_timeout_minutes=40), InstanceStatus.PROVISIONING)
    twice = repository.save(replace(once, idle_timeout_minutes=50), InstanceStatus.PROVISIONING)

    assert repository.get(stored.id) == twice
    assert twice.idle_timeout_minutes == 50


def test_saving_a_record_that_was_never_added_is_refused(repository):
    with pytest.raises(ConcurrentUpdateError):
        repository.save(new_record(), InstanceStatus.PROVISIONING)
    assert repository.get(new_record().id) is None


def user_records(repository, user: str, count: int) -> list[Instance]:
    return [
        repository.add(replace(
            new_record(f"inst-{user[:1]}{n:031d}", user),
            created_at=START + timedelta(minutes=n), task_id="task-1" if n % 2 else None,
        ))
        for n in range(count)
    ]


def test_a_users_listing_pages_newest_first_and_holds_only_their_records(repository):
    mine = user_records(repository, "alice", 5)
    user_records(repository, "bob", 2)

    first = repository.list(ListQuery(user_id="alice", limit=3))
    second = repository.list(ListQuery(user_id="alice", limit=3, cursor=first.next_cursor))

    assert [i.id for i in first.items] == [r.id for r in reversed(mine)][:3]
    assert [i.id for i in second.items] == [r.id for r in reversed(mine)][3:]
    assert second.next_cursor is None


def test_listings_filter_by_status_and_by_task(repository):
    records = user_records(repository, "alice", 4)
    repository.save(records[0].transition(InstanceStatus.ERROR, START, "test"),
                    InstanceStatus.PROVISIONING)

    errored = repository.list(ListQuery(user_id="alice", status=InstanceStatus.ERROR))
    tasked = repository.list(ListQuery(user_id=None, task_id="task-1"))
    everyone = repository.list(ListQuery(user_id=None, limit=50))

    assert [i.id for i in errored.items] == [records[0].id]
    assert [i.id for i in tasked.items] == [records[3].id, records[1].id]
    assert {i.id for i in everyone.items} == {r.id for r in records}


def test_a_cursor_of_another_listing_is_refused(repository):
    user_records(repository, "alice", 3)
    user_records(repository, "bob", 3)
    alices = repository.list(ListQuery(user_id="alice", limit=1))

    with pytest.raises(ValidationError):
        repository.list(ListQuery(user_id="bob", limit=1, cursor=alices.next_cursor))
    with pytest.raises(ValidationError):
        repository.list(ListQuery(user_id="alice", status=InstanceStatus.ERROR, limit=1,
                                  cursor=alices.next_cursor))
    with pytest.raises(ValidationError):
        repository.list(ListQuery(user_id="alice", limit=1, cursor="not-a-cursor"))


def test_stats_read_one_users_records_or_everyones(repository):
    user_records(repository, "alice", 2)
    user_records(repository, "bob", 1)

    assert {i.user_id for i in repository.all_for_stats("alice")} == {"alice"}
    assert len(list(repository.all_for_stats("alice"))) == 2
    assert len(list(repository.all_for_stats(None))) == 3


# -- records stored by earlier versions (the DynamoDB adapter only) -------------------------

# The billing_rule attribute as every version so far wrote it (JSON text), and as the reader
# also accepts it: without the source.
EARLIER_BILLING_RULES = [
    '{"name": "ec2-linux-per-second", "incrementSeconds": 1, "minimumSeconds": 60, '
    '"source": "https://aws.amazon.com/ec2/pricing/on-demand/ (Per-second billing: Linux '
    'instances, 60-second minimum)"}',
    '{"name": "ec2-linux-per-second", "incrementSeconds": 1, "minimumSeconds": 60}',
]


@pytest.mark.parametrize("stored_rule", EARLIER_BILLING_RULES)
def test_a_record_stored_with_an_earlier_billing_rule_reads_and_bills_by_it(aws, stored_rule):
    repository = bootstrap.container().repository
    record = repository.add(replace(new_record(), launched_at=START))
    table = boto3.client("dynamodb", region_name=aws.settings.region)
    key = {"id": {"S": record.id}}
    table.update_item(
        TableName=aws.settings.table_name, Key=key, UpdateExpression="SET billing_rule = :rule",
        ExpressionAttributeValues={":rule": {"S": stored_rule}},
    )

    read = repository.get(record.id)

    assert (read.billing_rule.name, read.billing_rule.increment_seconds,
            read.billing_rule.minimum_seconds) == ("ec2-linux-per-second", 1, 60)
    # Ten seconds at 0.526 USD an hour are billed as EC2's 60-second minimum.
    assert read.cost_at(START + timedelta(seconds=10)) == Decimal("0.008767")
    # Written again, the attribute keeps every member an earlier version reads.
    repository.save(read, expected_status=read.status)
    item = table.get_item(TableName=aws.settings.table_name, Key=key)["Item"]
    rewritten, earlier = json.loads(item["billing_rule"]["S"]), json.loads(stored_rule)
    assert {name: rewritten[name] for name in earlier} == earlier
