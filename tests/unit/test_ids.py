"""The id formats are written once (chalicelib/domain/ids.py): the ids the service mints are the
ids its routes, its records and its OpenAPI document accept."""

from __future__ import annotations

import re

import pytest

from chalicelib.api.contract import openapi_document
from chalicelib.api.identity import caller_from
from chalicelib.domain.errors import AuthenticationError
from chalicelib.domain.ids import (
    INSTANCE_ID_PATTERN,
    USER_ID_PATTERN,
    is_instance_id,
    is_user_id,
    new_instance_id,
)


def parameter_patterns(name: str) -> set[str]:
    """The patterns the OpenAPI document gives the path and query parameters called `name`."""
    return {
        parameter["schema"]["pattern"]
        for methods in openapi_document()["paths"].values()
        for operation in methods.values()
        for parameter in operation["parameters"]
        if parameter["name"] == name
    }


def property_patterns(name: str) -> set[str]:
    """The patterns the OpenAPI document gives the schemas' properties called `name`."""
    schemas = openapi_document()["components"]["schemas"].values()
    return {s["properties"][name]["pattern"] for s in schemas if name in s.get("properties", {})}


def test_minted_instance_ids_have_the_format_every_route_accepts():
    minted = [new_instance_id() for _ in range(1000)]
    assert len(set(minted)) == 1000
    assert all(is_instance_id(i) and re.fullmatch(INSTANCE_ID_PATTERN, i) for i in minted)


def test_the_document_gives_instance_ids_the_one_format_in_paths_and_records():
    assert parameter_patterns("instanceId") == {INSTANCE_ID_PATTERN}
    # The `id` of an InstanceRecord, and of a ProvisionedInstance, which extends it.
    assert property_patterns("id") == {INSTANCE_ID_PATTERN}
    assert re.fullmatch(INSTANCE_ID_PATTERN, new_instance_id())


def test_the_document_gives_user_ids_the_one_format_in_paths_and_filters():
    # The path of a user's limits, and the userId filters of the listing and the cost report.
    assert parameter_patterns("userId") == {USER_ID_PATTERN}


@pytest.mark.parametrize("text", [
    "inst-" + "0" * 31, "inst-" + "0" * 33, "inst-" + "A" * 32, "i-0123456789abcdef0",
    "inst-" + "0" * 32 + "\n",
])
def test_a_string_of_another_shape_is_no_instance_id(text):
    assert not is_instance_id(text)


@pytest.mark.parametrize("user", ["alice", "a.b@example.org", "x" * 128,
                                  "8d1e8c2a-3f5b-4b7e-9a61-0c2f5d8e9b10"])
def test_a_user_id_the_format_accepts_is_a_dev_token_user(user):
    assert is_user_id(user)
    caller = caller_from({"Authorization": f"Bearer dev:{user}"}, None, accepts_dev_tokens=True)
    assert caller.user_id == user


def test_a_user_id_ends_at_its_last_character_not_before_a_newline():
    assert not is_user_id("alice\n")


@pytest.mark.parametrize("user", ["", "-alice", "x" * 129, "al ice", "al:ice", "alice:root"])
def test_a_user_id_the_format_refuses_is_no_dev_token_user(user):
    assert not is_user_id(user)
    with pytest.raises(AuthenticationError):
        caller_from({"Authorization": f"Bearer dev:{user}"}, None, accepts_dev_tokens=True)
