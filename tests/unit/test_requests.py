"""Request bodies and query strings: strict types, bounded values, unknown fields refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chalicelib.api.requests import (
    ActivityBody,
    ListQueryParams,
    ProvisionBody,
    ProvisionByType,
)
from chalicelib.domain.states import InstanceStatus


def error_types(excinfo: pytest.ExceptionInfo[ValidationError]) -> list[tuple[tuple, str]]:
    return [(e["loc"], e["type"]) for e in excinfo.value.errors()]


# -- ProvisionBody ----------------------------------------------------------------------


def test_a_provision_request_needs_only_an_instance_type_and_idles_out_after_30_minutes():
    body = ProvisionByType.model_validate({"instanceType": "g4dn.xlarge"})
    assert body.instanceType == "g4dn.xlarge"
    assert body.autoTerminateMinutes == 30
    assert (body.provider, body.region, body.taskId, body.metadata) == (None, None, None, None)


def test_a_full_provision_request_is_accepted_as_sent():
    body = ProvisionByType.model_validate(
        {
            "instanceType": "Standard_NC6",
            "provider": "azure",
            "region": "eastus",
            "taskId": "job-42:train",
            "autoTerminateMinutes": 90,
            "metadata": {"team": "ml"},
        }
    )
    assert (body.provider, body.region, body.taskId) == ("azure", "eastus", "job-42:train")
    assert body.autoTerminateMinutes == 90
    assert body.metadata == {"team": "ml"}


def test_a_provision_request_without_an_instance_type_is_refused():
    with pytest.raises(ValidationError) as refused:
        ProvisionByType.model_validate({})
    assert error_types(refused) == [(("instanceType",), "missing")]


def test_a_provision_request_naming_both_a_type_and_a_gpu_is_refused():
    body = {"instanceType": "g4dn.xlarge", "gpu": "T4"}
    with pytest.raises(ValidationError) as refused:
        ProvisionBody.branch_for(body).model_validate(body)
    assert error_types(refused) == [(("instanceType",), "extra_forbidden")]
    with pytest.raises(ValidationError):
        ProvisionBody.model_validate(body)


def test_a_gpu_requirement_defaults_to_one_gpu_from_any_provider():
    body = ProvisionBody.branch_for({"gpu": "T4"}).model_validate({"gpu": "T4"})
    assert (body.gpu, body.gpuCount, body.provider) == ("T4", 1, "any")


def test_provider_any_is_refused_with_a_named_type():
    with pytest.raises(ValidationError):
        ProvisionByType.model_validate({"instanceType": "g4dn.xlarge", "provider": "any"})


@pytest.mark.parametrize("minutes", [5, 120])
def test_auto_terminate_accepts_the_bounds_of_5_and_120_minutes(minutes):
    body = {"instanceType": "p2.xlarge", "autoTerminateMinutes": minutes}
    assert ProvisionByType.model_validate(body).autoTerminateMinutes == minutes


@pytest.mark.parametrize(
    ("minutes", "kind"),
    [
        (4, "greater_than_equal"),
        (121, "less_than_equal"),
        ("30", "int_type"),
        (30.0, "int_type"),
        (True, "int_type"),
        (None, "int_type"),
    ],
)
def test_auto_terminate_outside_5_to_120_whole_minutes_is_refused(minutes, kind):
    with pytest.raises(ValidationError) as refused:
        ProvisionByType.model_validate(
            {"instanceType": "p2.xlarge", "autoTerminateMinutes": minutes}
        )
    assert error_types(refused) == [(("autoTerminateMinutes",), kind)]


@pytest.mark.parametrize("instance_type", [123, "", "g4dn xlarge", "a" * 65, "p2/xlarge"])
def test_an_instance_type_that_is_not_a_plain_name_is_refused(instance_type):
    with pytest.raises(ValidationError) as refused:
        ProvisionByType.model_validate({"instanceType": instance_type})
    assert [loc for loc, _ in error_types(refused)] == [("instanceType",)]


def test_an_unknown_field_in_a_provision_request_is_refused():
    with pytest.raises(ValidationError) as refused:
        ProvisionByType.model_validate({"instanceType": "p2.xlarge", "gpus": 2})
    assert error_types(refused) == [(("gpus",), "extra_forbidden")]


@pytest.mark.parametrize(
    ("field", "value"),
    [("provider", "gcp"), ("region", "US-EAST-1"), ("taskId", "-starts-with-dash")],
)
def test_unsupported_provider_region_or_task_id_is_refused(field, value):
    with pytest.raises(ValidationError) as refused:
        ProvisionByType.model_validate({"instanceType": "p2.xlarge", field: value})
    assert [loc for loc, _ in error_types(refused)] == [(field,)]


def test_metadata_may_have_up_to_32_keys_but_not_33():
    keys32 = {f"k{i}": i for i in range(32)}
    body = ProvisionByType.model_validate({"instanceType": "x", "metadata": keys32})
    assert body.metadata == keys32
    with pytest.raises(ValidationError, match="at most 32 keys"):
        ProvisionByType.model_validate({"instanceType": "x", "metadata": {**keys32, "k32": 32}})


def test_metadata_may_nest_four_levels_but_not_five():
    four = {"a": [{"b": {"c": 1}}]}  # dict > list > dict > dict
    assert ProvisionByType.model_validate({"instanceType": "x", "metadata": four}).metadata == four
    with pytest.raises(ValidationError, match="nested at most 4 levels deep"):
        ProvisionByType.model_validate({"instanceType": "x", "metadata": {"z": four}})


def test_metadata_may_be_8192_bytes_of_json_but_not_one_more():
    # {"k":"<n chars>"} serialises to n + 8 bytes.
    fits = {"k": "x" * 8184}
    assert ProvisionByType.model_validate({"instanceType": "x", "metadata": fits}).metadata == fits
    with pytest.raises(ValidationError, match="at most 8192 bytes as JSON"):
        ProvisionByType.model_validate({"instanceType": "x", "metadata": {"k": "x" * 8185}})


# -- ActivityBody -----------------------------------------------------------------------


@pytest.mark.parametrize("state", ["running", "idle"])
def test_activity_reports_running_or_idle(state):
    assert ActivityBody.model_validate({"state": state}).state == state


@pytest.mark.parametrize("body", [{"state": "busy"}, {"state": "idle", "at": "now"}, {}])
def test_activity_with_another_state_or_extra_fields_is_refused(body):
    with pytest.raises(ValidationError):
        ActivityBody.model_validate(body)


# -- ListQueryParams --------------------------------------------------------------------


def test_a_list_without_parameters_returns_fifty_of_any_status():
    params = ListQueryParams.model_validate({})
    assert (params.limit, params.status, params.cursor) == (50, None, None)


@pytest.mark.parametrize(("text", "limit"), [("1", 1), ("100", 100), ("25", 25)])
def test_a_list_limit_from_the_query_string_is_parsed_as_a_number(text, limit):
    assert ListQueryParams.model_validate({"limit": text}).limit == limit


@pytest.mark.parametrize("text", ["0", "101", "-5", "ten", "2.5"])
def test_a_list_limit_outside_1_to_100_is_refused(text):
    with pytest.raises(ValidationError) as refused:
        ListQueryParams.model_validate({"limit": text})
    assert [loc for loc, _ in error_types(refused)] == [("limit",)]


def test_a_list_can_be_filtered_by_a_lifecycle_status():
    assert ListQueryParams.model_validate({"status": "READY"}).status is InstanceStatus.READY


@pytest.mark.parametrize("status", ["ready", "BOOTING", ""])
def test_a_list_filter_naming_no_lifecycle_status_is_refused(status):
    with pytest.raises(ValidationError) as refused:
        ListQueryParams.model_validate({"status": status})
    assert error_types(refused) == [(("status",), "enum")]


def test_an_unknown_query_parameter_is_refused():
    with pytest.raises(ValidationError) as refused:
        ListQueryParams.model_validate({"limit": "10", "owner": "alice"})
    assert error_types(refused) == [(("owner",), "extra_forbidden")]


@pytest.mark.parametrize(("name", "value"), [("cursor", ""), ("userId", "al ice")])
def test_an_empty_cursor_or_malformed_user_id_is_refused(name, value):
    with pytest.raises(ValidationError):
        ListQueryParams.model_validate({name: value})
