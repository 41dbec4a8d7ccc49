"""The cloud provider's contract, run against the EC2 adapter (real boto3 against moto) and
against the fake cloud the use-case tests use (tests/twins.py): launches found again by their
record, terminates that are safe to repeat, and snapshots of the managed machines."""

from __future__ import annotations

import pytest

from chalicelib import bootstrap
from chalicelib.domain.cloud import CloudState
from chalicelib.providers.base import LaunchRequest
from tests.twins import FakeCloudProvider

REGION = "us-east-1"


@pytest.fixture(params=["ec2", "fake"])
def provider(request, clock):
    if request.param == "fake":
        return FakeCloudProvider("aws", clock)
    request.getfixturevalue("aws")
    return bootstrap.container().providers.get("aws")


def launch_for(provider, record_id: str = "inst-" + "c" * 32):
    return provider.launch(LaunchRequest(
        record_id=record_id, user_id="alice", task_id=None, instance_type="g4dn.xlarge",
        region=REGION, user_data="#cloud-config\n",
    ))


def test_a_launched_machine_is_found_again_by_its_record_and_stamped_by_the_cloud(
    provider, clock
):
    launched = launch_for(provider)

    found = provider.find_for_record("inst-" + "c" * 32, REGION)
    assert found is not None and found.resource_id == launched.resource_id
    assert launched.state in (CloudState.PENDING, CloudState.RUNNING)
    assert launched.launched_at == clock()
    assert provider.find_for_record("inst-" + "d" * 32, REGION) is None


def test_launching_again_for_the_same_record_returns_the_same_machine(provider):
    first = launch_for(provider)
    again = launch_for(provider)

    assert again.resource_id == first.resource_id
    assert [m.resource_id for m in provider.snapshot(REGION, []).managed] == [first.resource_id]


def test_a_machine_the_cloud_never_knew_reads_terminated(provider):
    # EC2's shape of id, which the fake takes as any other unknown id.
    assert provider.describe("i-0123456789abcdef0", REGION).state is CloudState.TERMINATED
    assert provider.terminate("i-0123456789abcdef0", REGION) is CloudState.TERMINATED


def test_a_terminated_machine_is_no_longer_the_records_and_terminating_again_is_safe(provider):
    launched = launch_for(provider)

    state = provider.terminate(launched.resource_id, REGION)

    assert not state.is_present
    assert not provider.describe(launched.resource_id, REGION).state.is_present
    assert provider.find_for_record("inst-" + "c" * 32, REGION) is None
    assert not provider.terminate(launched.resource_id, REGION).is_present
    # A new launch for the record gets a new machine.
    assert launch_for(provider).resource_id != launched.resource_id


def test_a_snapshot_lists_the_managed_machines_and_the_asked_ones(provider):
    one = launch_for(provider, "inst-" + "1" * 32)
    two = launch_for(provider, "inst-" + "2" * 32)
    provider.terminate_many([two.resource_id], REGION)

    look = provider.snapshot(REGION, [one.resource_id, two.resource_id])
    only_asked = provider.snapshot(REGION, [two.resource_id], include_managed=False)

    by_record = {m.record_id: m for m in look.managed}
    assert by_record["inst-" + "1" * 32].resource_id == one.resource_id
    assert by_record["inst-" + "1" * 32].state.is_present
    assert not look.state_of(two.resource_id).state.is_present
    assert only_asked.managed == ()
    assert set(only_asked.by_id) == {two.resource_id}
