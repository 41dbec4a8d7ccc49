"""Every bad input is answered with a 4xx and a JSON error body that says what is wrong;
none of them may surface as a 500."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

INSTANCES = "/api/instances"
MISSING_ID = "inst-" + "0" * 32


def assert_error(
    answer: tuple[int, Any, dict[str, str]], status: int, code: str, *mentions: str
) -> dict:
    """The answer has `status`, the JSON error shape with `code`, and a message naming
    each of `mentions`."""
    got_status, body, headers = answer
    assert got_status == status, body
    assert isinstance(body, dict), body
    assert headers["Content-Type"] == "application/problem+json"
    assert body["status"] == status and body["title"], body
    assert body["type"].endswith(code) and body["detail"] == body["message"], body
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    for mention in mentions:
        assert mention in body["message"], body
    return body


def field_names(body: dict) -> list[str]:
    assert "fields" in body, body
    return [f["field"] for f in body["fields"]]


def provision(api, **body: Any) -> tuple[int, Any, dict[str, str]]:
    return api.call("POST", INSTANCES, body={"instanceType": "g4dn.xlarge", **body})


def cursor_of(key: Any, filters: Any = ("alice", None, None)) -> str:
    """A hand-made cursor in the service's format: a start key and the listing's filters."""
    raw = json.dumps({"k": key, "f": list(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- request bodies ---------------------------------------------------------------------


def test_a_body_that_is_not_json_is_refused_as_invalid_json(api):
    answer = api.call("POST", INSTANCES, raw_body='{"instanceType": "g4dn.xlarge",')
    assert_error(answer, 400, "invalid_request", "not valid JSON")


@pytest.mark.parametrize(
    "raw_body", ['["g4dn.xlarge"]', '"g4dn.xlarge"', "42", "null", "true"],
    ids=["array", "string", "number", "null", "boolean"],
)
def test_a_json_body_that_is_not_an_object_is_refused(api, raw_body):
    answer = api.call("POST", INSTANCES, raw_body=raw_body)
    assert_error(answer, 400, "invalid_request", "must be a JSON object")


def test_an_empty_provision_body_is_refused_as_missing(api):
    answer = api.call("POST", INSTANCES, raw_body="")
    assert_error(answer, 400, "invalid_request", "JSON object body")


def test_a_provision_request_without_a_body_is_refused(api):
    answer = api.call("POST", INSTANCES)
    assert_error(answer, 400, "invalid_request", "JSON object body")


def test_a_body_over_64_kib_is_refused_as_too_large(api):
    raw = json.dumps({"instanceType": "g4dn.xlarge", "metadata": {"blob": "x" * 70_000}})
    assert_error(api.call("POST", INSTANCES, raw_body=raw), 413, "payload_too_large",
                 str(len(raw)), "65536")


def test_a_provision_body_without_instance_type_names_the_missing_field(api):
    body = assert_error(api.call("POST", INSTANCES, body={}), 400, "invalid_request",
                        "instanceType")
    assert field_names(body) == ["instanceType"]


def test_an_unknown_field_in_the_provision_body_is_refused_by_name(api):
    body = assert_error(provision(api, gpus=4), 400, "invalid_request", "gpus", "allowed")
    assert field_names(body) == ["gpus"]


@pytest.mark.parametrize(
    "value", ["30", 30.5, True, None, [30]], ids=["string", "float", "boolean", "null", "list"]
)
def test_auto_terminate_minutes_of_the_wrong_type_is_refused_by_name(api, value):
    body = assert_error(
        provision(api, autoTerminateMinutes=value), 400, "invalid_request",
        "autoTerminateMinutes",
    )
    assert field_names(body) == ["autoTerminateMinutes"]


@pytest.mark.parametrize("minutes, bound", [(4, "5"), (0, "5"), (-1, "5"), (121, "120")])
def test_auto_terminate_minutes_outside_5_to_120_is_refused_naming_the_limit(
    api, minutes, bound
):
    body = assert_error(
        provision(api, autoTerminateMinutes=minutes), 400, "invalid_request",
        "autoTerminateMinutes", bound,
    )
    assert field_names(body) == ["autoTerminateMinutes"]


@pytest.mark.parametrize("minutes", [5, 120])
def test_auto_terminate_minutes_at_the_edges_of_the_range_is_accepted(api, minutes):
    status, instance, _ = provision(api, autoTerminateMinutes=minutes)
    assert status == 202, instance
    assert instance["autoTerminateMinutes"] == minutes


@pytest.mark.parametrize(
    "field, value",
    [("instanceType", 7), ("instanceType", ""), ("instanceType", "g4dn xlarge"),
     ("provider", "gcp"), ("region", "US EAST"), ("taskId", "-starts-with-dash"),
     ("metadata", ["not", "an", "object"])],
    ids=["type-number", "type-empty", "type-space", "provider", "region", "task", "metadata"],
)
def test_a_malformed_provision_field_is_refused_by_name(api, field, value):
    body = assert_error(provision(api, **{field: value}), 400, "invalid_request", field)
    assert field in field_names(body)[0], body


# -- instance types, providers, regions -------------------------------------------------


def test_an_unknown_instance_type_is_refused_with_the_list_of_valid_types(api):
    body = assert_error(
        api.call("POST", INSTANCES, body={"instanceType": "g9.colossal"}),
        400, "unknown_instance_type", "g9.colossal", "g4dn.xlarge", "p3.2xlarge",
    )
    assert set(body) <= {"type", "title", "status", "detail", "error", "message", "fields"}


def test_an_azure_type_asked_of_the_aws_provider_is_refused_listing_only_aws_types(api):
    body = assert_error(
        api.call(
            "POST", INSTANCES, body={"instanceType": "Standard_NC4as_T4_v3", "provider": "aws"}
        ),
        400, "unknown_instance_type", "Standard_NC4as_T4_v3", "aws", "g4dn.xlarge",
    )
    assert "Standard_NV36ads_A10_v5" not in body["message"]


def test_an_aws_type_asked_of_the_azure_provider_is_refused_listing_only_azure_types(api):
    body = assert_error(
        api.call("POST", INSTANCES, body={"instanceType": "g4dn.xlarge", "provider": "azure"}),
        400, "unknown_instance_type", "g4dn.xlarge", "azure", "Standard_NC4as_T4_v3",
    )
    assert "p3.2xlarge" not in body["message"]


@pytest.mark.parametrize("body", [{"instanceType": "Standard_NC4as_T4_v3"},
                                  {"instanceType": "Standard_NC4as_T4_v3", "provider": "azure"}])
def test_an_azure_type_is_refused_as_unavailable_naming_the_missing_settings(
    api, aws, clock, body
):
    from dataclasses import replace

    from chalicelib import bootstrap
    from chalicelib.bootstrap import Container
    from chalicelib.settings import AzureSettings

    # The emulation serves Azure; a deployment without the AZURE_* settings does not.
    bootstrap.use(Container(settings=replace(aws.settings, azure=AzureSettings()), clock=clock))
    assert_error(api.call("POST", INSTANCES, body=body), 503, "provider_unavailable",
                 "azure", "AZURE_SUBSCRIPTION_ID")
    status, listing, _ = api.call("GET", INSTANCES)
    assert status == 200 and listing["items"] == [], "no record is kept for a refused request"


def test_a_region_this_deployment_does_not_serve_is_refused_naming_the_served_one(api):
    body = assert_error(provision(api, region="eu-west-1"), 422, "unsatisfiable_request",
                        "eu-west-1", "us-east-1")
    assert body["fields"] == [{"field": "region", "problem": "not served", "allowed": "us-east-1"}]
    status, listing, _ = api.call("GET", INSTANCES)
    assert status == 200 and listing["items"] == []


def test_the_served_region_may_be_named_explicitly(api):
    status, instance, _ = provision(api, region="us-east-1", provider="aws")
    assert status == 202, instance
    assert instance["region"] == "us-east-1"


# -- metadata bounds --------------------------------------------------------------------


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


def test_metadata_with_more_than_32_keys_is_refused_naming_the_limit(api):
    body = assert_error(
        provision(api, metadata={f"key{i}": i for i in range(33)}),
        400, "invalid_request", "metadata", "32 keys",
    )
    assert field_names(body) == ["metadata"]


def test_metadata_with_32_keys_is_accepted(api):
    status, instance, _ = provision(api, metadata={f"key{i}": i for i in range(32)})
    assert status == 202, instance
    assert len(instance["metadata"]) == 32


def test_metadata_nested_deeper_than_4_levels_is_refused_naming_the_limit(api):
    body = assert_error(provision(api, metadata=nested(5)), 400, "invalid_request",
                        "metadata", "4 levels")
    assert field_names(body) == ["metadata"]


def test_metadata_nested_deeper_than_4_levels_through_lists_is_refused(api):
    metadata = {"a": [[[{"b": 1}]]]}
    assert_error(provision(api, metadata=metadata), 400, "invalid_request", "4 levels")


def test_metadata_nested_4_levels_deep_is_accepted(api):
    status, instance, _ = provision(api, metadata=nested(4))
    assert status == 202, instance
    assert instance["metadata"] == nested(4)


@pytest.mark.parametrize("levels", [16, 400, 999])
def test_metadata_nested_hundreds_of_levels_deep_is_refused_not_crashed(api, levels):
    # Deep enough to pass Python's recursion limit in any recursive walk of the body.
    raw = '{"instanceType": "g4dn.xlarge", "metadata": ' + '{"k": ' * levels + "1" + \
        "}" * levels + "}"
    assert_error(api.call("POST", INSTANCES, raw_body=raw), 400, "invalid_request", "nest")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_as_not_json_and_nothing_is_stored(api, constant):
    raw = '{"instanceType": "g4dn.xlarge", "metadata": {"dose": ' + constant + "}}"

    assert_error(api.call("POST", INSTANCES, raw_body=raw), 400, "invalid_request",
                 f"{constant} is not a number JSON allows")
    assert api.call("GET", INSTANCES)[1]["items"] == []


def test_metadata_nested_thousands_of_levels_deep_is_refused_not_crashed(api):
    raw = '{"instanceType": "g4dn.xlarge", "metadata": ' + '{"k": ' * 5000 + "1" + \
        "}" * 5000 + "}"
    assert_error(api.call("POST", INSTANCES, raw_body=raw), 400, "invalid_request", "nested")


def test_metadata_larger_than_8192_bytes_is_refused_naming_the_limit(api):
    body = assert_error(provision(api, metadata={"blob": "x" * 8200}), 400, "invalid_request",
                        "metadata", "8192 bytes")
    assert field_names(body) == ["metadata"]


# -- list query strings -----------------------------------------------------------------


def test_an_unknown_status_filter_is_refused_naming_the_field(api):
    body = assert_error(api.call("GET", f"{INSTANCES}?status=BOGUS"), 400, "invalid_request",
                        "status")
    assert field_names(body) == ["status"]
    assert "READY" in body["message"], "the message lists the statuses that do exist"


@pytest.mark.parametrize("limit, mention", [("0", "1"), ("101", "100"), ("abc", "integer"),
                                            ("-5", "1"), ("2.5", "integer")])
def test_a_list_limit_outside_1_to_100_or_not_a_number_is_refused(api, limit, mention):
    body = assert_error(api.call("GET", f"{INSTANCES}?limit={limit}"), 400, "invalid_request",
                        "limit", mention)
    assert field_names(body) == ["limit"]


@pytest.mark.parametrize("limit", ["1", "100"])
def test_a_list_limit_at_the_edges_of_the_range_is_accepted(api, limit):
    status, listing, _ = api.call("GET", f"{INSTANCES}?limit={limit}")
    assert status == 200, listing


def test_an_unknown_list_query_parameter_is_refused_by_name(api):
    body = assert_error(api.call("GET", f"{INSTANCES}?owner=alice"), 400, "invalid_request",
                        "owner")
    assert field_names(body) == ["owner"]


def test_a_query_parameter_on_stats_is_refused_by_name(api):
    body = assert_error(api.call("GET", f"{INSTANCES}/stats?status=READY"), 400,
                        "invalid_request", "status", "unknown")
    assert body["fields"] == [{"field": "status", "problem": "unknown field", "allowed": "none"}]


def test_a_query_parameter_on_a_provision_is_refused_and_nothing_is_launched(api, aws):
    answer = api.call("POST", f"{INSTANCES}?dryRun=true", body={"instanceType": "g4dn.xlarge"})

    body = assert_error(answer, 400, "invalid_request", "dryRun", "unknown")
    assert body["fields"] == [{"field": "dryRun", "problem": "unknown field", "allowed": "none"}]
    assert api.call("GET", INSTANCES)[1]["items"] == []


def test_a_query_parameter_on_an_activity_report_or_an_agent_call_is_refused(api, aws, agents):
    instance = api.provision()
    aws.wait_for_workflows()
    path = f"{INSTANCES}/{instance['id']}/activity?state=running"
    assert_error(api.call("POST", path, body={"state": "running"}), 400, "invalid_request",
                 "state", "unknown")
    secret = agents.headers(agents.config_of(instance["id"]))
    beat = {"gpus": [], "healthy": True}
    agent_path = f"/api/agent/instances/{instance['id']}/heartbeat?verbose=1"
    assert_error(api.call("POST", agent_path, user=None, body=beat, headers=secret), 400,
                 "invalid_request", "verbose")
    ready_path = f"/api/agent/instances/{instance['id']}/ready?verbose=1"
    assert_error(api.call("POST", ready_path, user=None, body={"ok": True, "gpus": []},
                          headers=secret), 400, "invalid_request", "verbose")
    # Nothing was taken as activity or as a report.
    record = api.get(instance["id"])
    assert (record["status"], record["agent"]["lastHeartbeatAt"]) == ("READY", None)


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "%%%%", "e30", cursor_of(["id"]), cursor_of({"id": {"S": "x"}}),
     cursor_of({"id": {"N": "1"}, "user_id": {"S": "alice"}, "created_at": {"S": "x"}}),
     "A" * 2049],
    ids=["word", "symbols", "empty-object", "array", "wrong-keys", "wrong-type", "too-long"],
)
def test_a_garbage_cursor_is_refused_as_not_valid_for_this_listing(api, cursor):
    body = assert_error(api.call("GET", f"{INSTANCES}?cursor={cursor}"), 400,
                        "invalid_request", "cursor")
    assert "Traceback" not in body["message"]


def test_a_cursor_from_one_listing_used_with_another_filter_is_refused(api):
    api.provision(taskId="task-a")
    api.provision(taskId="task-a")
    status, page, _ = api.call("GET", f"{INSTANCES}?taskId=task-a&limit=1")
    assert status == 200 and page["nextCursor"], page
    answer = api.call("GET", f"{INSTANCES}?taskId=task-b&cursor={page['nextCursor']}")
    assert_error(answer, 400, "invalid_request", "cursor")


def test_a_cursor_from_another_users_listing_is_refused_and_leaks_nothing(api):
    first = api.provision(user="alice")
    second = api.provision(user="alice")
    status, page, _ = api.call("GET", f"{INSTANCES}?limit=1", user="alice")
    assert status == 200 and page["nextCursor"], page
    answer = api.call("GET", f"{INSTANCES}?cursor={page['nextCursor']}", user="bob")
    body = assert_error(answer, 400, "invalid_request", "cursor")
    text = json.dumps(body)
    assert first["id"] not in text and second["id"] not in text and "alice" not in text


def test_a_cursor_naming_another_user_is_refused_even_when_hand_made(api):
    alice = api.provision(user="alice")
    # Bob's own filters, but a start key inside alice's partition.
    forged = cursor_of({"id": {"S": alice["id"]}, "user_id": {"S": "alice"},
                        "created_at": {"S": alice["createdAt"]}}, filters=("bob", None, None))
    answer = api.call("GET", f"{INSTANCES}?cursor={forged}", user="bob")
    assert_error(answer, 400, "invalid_request", "cursor")


# -- instance ids -----------------------------------------------------------------------


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("DELETE", ""),
                                            ("POST", "/activity")])
def test_an_instance_id_that_does_not_exist_is_not_found(api, method, suffix):
    body = {"state": "running"} if method == "POST" else None
    answer = api.call(method, f"{INSTANCES}/{MISSING_ID}{suffix}", body=body)
    assert_error(answer, 404, "instance_not_found", MISSING_ID)


@pytest.mark.parametrize("bad_id", ["nope", "inst-XYZ", "inst-" + "0" * 31,
                                    "inst-" + "0" * 33, "i-0123456789abcdef0"])
@pytest.mark.parametrize("method, suffix", [("GET", ""), ("DELETE", ""),
                                            ("POST", "/activity")])
def test_a_malformed_instance_id_is_not_found(api, method, suffix, bad_id):
    body = {"state": "running"} if method == "POST" else None
    answer = api.call(method, f"{INSTANCES}/{bad_id}{suffix}", body=body)
    assert_error(answer, 404, "instance_not_found", bad_id)


# -- activity reports -------------------------------------------------------------------


@pytest.fixture
def ready_instance(api, aws) -> dict:
    instance = api.provision()
    aws.wait_for_workflows()
    status, current, _ = api.call("GET", f"{INSTANCES}/{instance['id']}")
    assert status == 200 and current["status"] == "READY", current
    return current


@pytest.mark.parametrize("state", ["sleeping", "RUNNING", "", None, 1])
def test_an_activity_state_other_than_running_or_idle_is_refused(api, ready_instance, state):
    answer = api.call("POST", f"{INSTANCES}/{ready_instance['id']}/activity",
                      body={"state": state})
    body = assert_error(answer, 400, "invalid_request", "state", "running", "idle")
    assert field_names(body) == ["state"]


@pytest.mark.parametrize(
    "raw_body, mention",
    [("", "JSON object body"), ("{state: running}", "not valid JSON"),
     ('["running"]', "JSON object"), ('{"state": "running", "cpu": 90}', "cpu"),
     ("{}", "state")],
    ids=["empty", "not-json", "array", "unknown-field", "missing-state"],
)
def test_a_malformed_activity_body_is_refused(api, ready_instance, raw_body, mention):
    answer = api.call("POST", f"{INSTANCES}/{ready_instance['id']}/activity", raw_body=raw_body)
    assert_error(answer, 400, "invalid_request", mention)


def test_a_refused_activity_report_leaves_the_instance_as_it_was(api, ready_instance, clock):
    clock.advance(minutes=3)
    before = api.call("GET", f"{INSTANCES}/{ready_instance['id']}")[1]
    api.call("POST", f"{INSTANCES}/{ready_instance['id']}/activity", body={"state": "sleeping"})
    after = api.call("GET", f"{INSTANCES}/{ready_instance['id']}")[1]
    assert after == before


def test_activity_on_an_instance_that_is_being_stopped_is_an_invalid_transition(
    api, aws, ready_instance
):
    status, stopped, _ = api.call("DELETE", f"{INSTANCES}/{ready_instance['id']}")
    assert status == 202 and stopped["status"] in ("STOPPING", "TERMINATED"), stopped
    aws.wait_for_workflows()
    answer = api.call("POST", f"{INSTANCES}/{ready_instance['id']}/activity",
                      body={"state": "running"})
    assert_error(answer, 409, "invalid_transition", "READY or RUNNING")
    status, current, _ = api.call("GET", f"{INSTANCES}/{ready_instance['id']}")
    assert current["status"] in ("STOPPING", "TERMINATED"), current
