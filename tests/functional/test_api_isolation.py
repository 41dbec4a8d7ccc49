"""Who may see and touch what: every request needs an identity, users only ever see their
own instances (someone else's looks exactly like a missing one), operators see everyone's."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

INSTANCES = "/api/instances"
MISSING_ID = "inst-" + "f" * 32
OPERATOR = "ops:admin"

ROUTES = [
    ("POST", INSTANCES, {"instanceType": "g4dn.xlarge"}),
    ("GET", INSTANCES, None),
    ("GET", f"{INSTANCES}/stats", None),
    ("GET", f"{INSTANCES}/{MISSING_ID}", None),
    ("DELETE", f"{INSTANCES}/{MISSING_ID}", None),
    ("POST", f"{INSTANCES}/{MISSING_ID}/activity", {"state": "running"}),
]
ROUTE_IDS = ["provision", "list", "stats", "get", "terminate", "activity"]


def ids(listing: dict) -> set[str]:
    return {item["id"] for item in listing["items"]}


def listing_of(api, user: str, query: str = "") -> dict:
    status, listing, _ = api.call("GET", f"{INSTANCES}{query}", user=user)
    assert status == 200, listing
    return listing


def stats_of(api, user: str) -> dict:
    status, stats, _ = api.call("GET", f"{INSTANCES}/stats", user=user)
    assert status == 200, stats
    return stats


def assert_unauthorized(answer: tuple[int, Any, dict[str, str]]) -> dict:
    status, body, headers = answer
    assert status == 401, body
    assert body["error"] == "unauthorized", body
    assert "Authorization" in body["message"] or "bearer token" in body["message"], body
    assert headers.get("WWW-Authenticate") == "Bearer", headers
    return body


@pytest.fixture
def alices(api, aws, clock) -> dict:
    """Alice's instance, READY, seen after the clock has moved on (so any write shows)."""
    instance = api.provision(user="alice", taskId="alice-task")
    aws.wait_for_workflows()
    clock.advance(minutes=2)
    status, current, _ = api.call("GET", f"{INSTANCES}/{instance['id']}", user="alice")
    assert status == 200 and current["status"] == "READY", current
    return current


# -- authentication ---------------------------------------------------------------------


@pytest.mark.parametrize("method, path, body", ROUTES, ids=ROUTE_IDS)
def test_a_request_without_an_authorization_header_is_unauthorized(api, method, path, body):
    body = assert_unauthorized(api.call(method, path, user=None, body=body))
    assert "Missing Authorization header" in body["message"]


@pytest.mark.parametrize(
    "header", ["Bearer nope", "Basic abc", "Bearer dev:"],
    ids=["no-dev-prefix", "basic-scheme", "empty-user"],
)
@pytest.mark.parametrize("method, path, body", ROUTES, ids=ROUTE_IDS)
def test_a_request_with_a_bad_token_is_unauthorized_on_every_route(
    api, method, path, body, header
):
    body = assert_unauthorized(
        api.call(method, path, user=None, body=body, headers={"Authorization": header})
    )
    assert "Bad bearer token" in body["message"]


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "dev:alice", "Basic dev:alice", "Bearer dev:alice:root",
     "Bearer dev:-alice", "Bearer dev:al ice", "Bearer dev:" + "a" * 129,
     "Bearer dev:alice:admin:admin"],
    ids=["scheme-only", "scheme-space", "no-scheme", "basic-dev-token", "unknown-role",
         "leading-dash", "space-in-user", "user-too-long", "admin-twice"],
)
def test_a_malformed_dev_token_is_unauthorized(api, header):
    body = assert_unauthorized(
        api.call("GET", INSTANCES, user=None, headers={"Authorization": header})
    )
    assert "Bad bearer token" in body["message"]


def test_an_unauthorized_request_is_refused_before_its_body_is_read(api):
    assert_unauthorized(api.call("POST", INSTANCES, user=None, raw_body="{not json"))


def test_an_unauthorized_provision_request_creates_nothing(api):
    assert_unauthorized(api.call("POST", INSTANCES, user=None,
                                 body={"instanceType": "g4dn.xlarge"}))
    assert stats_of(api, OPERATOR)["total"] == 0


def test_the_bearer_scheme_is_accepted_in_any_case(api):
    status, listing, _ = api.call("GET", INSTANCES, user=None,
                                  headers={"Authorization": "bearer dev:alice"})
    assert status == 200, listing


# -- another user's instance looks missing ----------------------------------------------


@pytest.mark.parametrize(
    "method, suffix, body",
    [("GET", "", None), ("DELETE", "", None),
     ("POST", "/activity", {"state": "running"}), ("POST", "/activity", {"state": "idle"})],
    ids=["get", "terminate", "activity-running", "activity-idle"],
)
def test_another_users_instance_answers_exactly_like_a_missing_one(
    api, alices, method, suffix, body
):
    status, refused, headers = api.call(
        method, f"{INSTANCES}/{alices['id']}{suffix}", user="bob", body=body
    )
    missing_status, missing, missing_headers = api.call(
        method, f"{INSTANCES}/{MISSING_ID}{suffix}", user="bob", body=body
    )
    assert status == missing_status == 404, refused
    assert refused["error"] == missing["error"] == "instance_not_found"
    assert refused.keys() == missing.keys() == {
        "type", "title", "status", "detail", "error", "message",
    }
    assert refused["message"].replace(alices["id"], "<id>") == \
        missing["message"].replace(MISSING_ID, "<id>")
    assert headers == missing_headers
    assert "alice" not in json.dumps(refused)


def test_another_users_attempts_leave_the_instance_unchanged(api, alices):
    path = f"{INSTANCES}/{alices['id']}"
    api.call("POST", f"{path}/activity", user="bob", body={"state": "running"})
    api.call("POST", f"{path}/activity", user="bob", body={"state": "idle"})
    api.call("DELETE", path, user="bob")
    status, after, _ = api.call("GET", path, user="alice")
    assert status == 200
    assert after == alices


def test_an_instance_id_in_upper_case_is_not_found(api, alices):
    status, body, _ = api.call("GET", f"{INSTANCES}/{alices['id'].upper()}", user="alice")
    assert status == 404 and body["error"] == "instance_not_found", body


# -- listings and stats -----------------------------------------------------------------


def test_a_users_list_contains_only_their_own_instances(api, alices):
    bobs = api.provision(user="bob")
    assert ids(listing_of(api, "bob")) == {bobs["id"]}
    assert ids(listing_of(api, "alice")) == {alices["id"]}


def test_a_users_list_filtered_by_another_users_task_is_empty(api, alices):
    api.provision(user="bob")
    assert listing_of(api, "bob", "?taskId=alice-task")["items"] == []
    assert ids(listing_of(api, "alice", "?taskId=alice-task")) == {alices["id"]}


def test_a_user_with_no_instances_gets_an_empty_list_while_others_have_some(api, alices):
    assert listing_of(api, "carol") == {"items": [], "nextCursor": None}


def test_a_users_stats_do_not_count_another_users_instances(api, aws, alices):
    api.provision(user="bob", instanceType="p3.2xlarge")
    aws.wait_for_workflows()
    bob = stats_of(api, "bob")
    assert bob["total"] == 1 and bob["live"] == 1
    assert bob["byStatus"]["READY"] == 1
    # Only bob's p3.2xlarge burns money in bob's figures, not alice's g4dn.xlarge.
    assert Decimal(bob["burnRateUsdPerHour"]) == Decimal("3.06")
    alice = stats_of(api, "alice")
    assert alice["total"] == 1
    assert Decimal(alice["burnRateUsdPerHour"]) == Decimal("0.526")


def test_a_user_with_no_instances_has_zero_stats_and_no_cost(api, alices):
    carol = stats_of(api, "carol")
    assert carol["total"] == 0 and carol["live"] == 0
    assert Decimal(carol["burnRateUsdPerHour"]) == 0
    assert Decimal(carol["totalCostUsd"]) == 0
    assert carol["periodStart"] is None


def test_a_user_may_name_their_own_id_in_the_list_query(api, alices):
    assert ids(listing_of(api, "alice", "?userId=alice")) == {alices["id"]}


def test_a_user_naming_another_users_id_in_the_list_query_is_refused(api, alices):
    status, body, _ = api.call("GET", f"{INSTANCES}?userId=alice", user="bob")
    assert status == 400, body
    assert body["error"] == "invalid_request"
    assert "Only operators" in body["message"] and "userId" in body["message"]
    assert alices["id"] not in json.dumps(body)


def test_a_cursor_from_an_operators_listing_is_refused_for_a_normal_user(api, alices):
    api.provision(user="bob")
    status, page, _ = api.call("GET", f"{INSTANCES}?limit=1", user=OPERATOR)
    assert status == 200 and page["nextCursor"], page
    status, body, _ = api.call("GET", f"{INSTANCES}?cursor={page['nextCursor']}", user="bob")
    assert status == 400 and body["error"] == "invalid_request", body
    assert "cursor" in body["message"]


# -- operators --------------------------------------------------------------------------


def test_an_operator_lists_every_users_instances(api, alices):
    bobs = api.provision(user="bob")
    assert ids(listing_of(api, OPERATOR)) == {alices["id"], bobs["id"]}


def test_an_operator_can_narrow_the_list_to_one_user(api, alices):
    bobs = api.provision(user="bob")
    assert ids(listing_of(api, OPERATOR, "?userId=alice")) == {alices["id"]}
    assert ids(listing_of(api, OPERATOR, "?userId=bob")) == {bobs["id"]}


def test_an_operators_stats_count_every_users_instances(api, aws, alices):
    api.provision(user="bob")
    api.provision(user="bob", instanceType="p3.2xlarge")
    aws.wait_for_workflows()
    everyone = stats_of(api, OPERATOR)
    assert everyone["total"] == 3 and everyone["live"] == 3
    assert everyone["byStatus"]["READY"] == 3
    assert Decimal(everyone["burnRateUsdPerHour"]) == Decimal("4.112")
    assert stats_of(api, "alice")["total"] + stats_of(api, "bob")["total"] == 3


def test_an_operator_can_read_another_users_instance(api, alices):
    status, seen, _ = api.call("GET", f"{INSTANCES}/{alices['id']}", user=OPERATOR)
    assert status == 200, seen
    assert seen["userId"] == "alice"
    assert seen == alices


def test_an_operator_token_without_the_admin_suffix_is_a_normal_user(api, alices):
    assert listing_of(api, "ops")["items"] == []
    status, body, _ = api.call("GET", f"{INSTANCES}/{alices['id']}", user="ops")
    assert status == 404 and body["error"] == "instance_not_found", body
