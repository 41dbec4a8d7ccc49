"""Choosing by requirement (the cheapest matching type) and reading the catalog, with the
lifecycle status of each type: retired ones refused, previous-generation ones behind a setting."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chalicelib import bootstrap
from chalicelib.bootstrap import Container

T4_ALTERNATIVES = [
    "Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3", "Standard_NC16as_T4_v3", "g4dn.12xlarge",
    "Standard_NC64as_T4_v3",
]


def allow_previous_generation(aws, clock) -> None:
    bootstrap.use(Container(
        settings=replace(aws.settings, allow_previous_generation=True), clock=clock,
    ))


def test_a_request_for_one_t4_provisions_the_cheapest_t4_type(api):
    status, instance, _ = api.call("POST", "/api/instances", body={"gpu": "T4", "gpuCount": 1})

    assert status == 202
    assert instance["instanceType"] == "g4dn.xlarge"
    assert instance["hourlyRateUsd"] == "0.526"
    offer = instance["offer"]
    assert offer["chosen"] == {
        "instanceType": "g4dn.xlarge", "provider": "aws", "gpu": {"model": "T4", "count": 1},
        "hourlyUsd": "0.526", "available": True, "reason": None,
    }
    assert [a["instanceType"] for a in offer["alternatives"]] == T4_ALTERNATIVES
    assert instance["warnings"] == []


def test_a_request_for_four_t4s_skips_types_with_fewer(api):
    _, instance, _ = api.call("POST", "/api/instances", body={"gpu": "t4", "gpuCount": 4})
    assert instance["instanceType"] == "g4dn.12xlarge"
    assert [a["instanceType"] for a in instance["offer"]["alternatives"]] == [
        "Standard_NC64as_T4_v3",
    ]


def test_equal_prices_are_broken_by_provider_then_name(api):
    # g4dn.xlarge (aws) and Standard_NC4as_T4_v3 (azure) both cost 0.526 for one T4.
    _, instance, _ = api.call("POST", "/api/instances", body={"gpu": "T4", "provider": "any"})
    assert instance["instanceType"] == "g4dn.xlarge"
    considered = [(a["instanceType"], a["hourlyUsd"]) for a in instance["offer"]["alternatives"]]
    assert considered[0] == ("Standard_NC4as_T4_v3", "0.526")
    prices = [float(price) for _, price in considered]
    assert prices == sorted(prices)


def test_a_requirement_may_be_held_to_one_provider(api):
    _, instance, _ = api.call("POST", "/api/instances", body={"gpu": "T4", "provider": "aws"})
    assert instance["instanceType"] == "g4dn.xlarge"
    assert {a["provider"] for a in instance["offer"]["alternatives"]} == {"aws"}


@pytest.mark.parametrize(
    ("requirement", "mention"),
    [({"gpu": "B200"}, "B200"), ({"gpu": "V100", "gpuCount": 2}, "V100"),
     ({"gpu": "A10G", "provider": "azure"}, "azure")],
)
def test_a_requirement_nothing_meets_answers_422_and_writes_nothing(api, requirement, mention):
    status, body, _ = api.call("POST", "/api/instances", body=requirement)

    assert status == 422
    assert body["error"] == "no_matching_instance_type"
    assert mention in body["detail"]
    assert api.call("GET", "/api/instances")[1]["items"] == []


def test_the_catalog_lists_every_type_with_price_and_billing_rule(api):
    status, catalog, _ = api.call("GET", "/api/instance-types")

    assert status == 200
    assert len(catalog["items"]) == 25  # the 30 types less the 5 retired ones
    g4dn = next(t for t in catalog["items"] if t["name"] == "g4dn.xlarge")
    assert g4dn["hourlyUsd"] == "0.526"
    assert g4dn["gpu"] == {"model": "T4", "count": 1}
    assert g4dn["billing"]["minimumSeconds"] == 60
    assert (g4dn["status"], g4dn["replacement"]) == ("current", None)
    assert g4dn["price"]["url"] == "https://aws.amazon.com/ec2/pricing/on-demand/"
    assert (g4dn["price"]["region"], g4dn["price"]["asOf"]) == ("us-east-1", "2026-12-03")


def test_the_catalog_shows_the_current_generations_of_both_providers(api):
    _, catalog, _ = api.call("GET", "/api/instance-types")
    by_name = {t["name"]: t for t in catalog["items"]}
    assert by_name["g5.xlarge"]["gpu"] == {"model": "A10G", "count": 1}
    assert by_name["g6.xlarge"]["gpu"] == {"model": "L4", "count": 1}
    nc4 = by_name["Standard_NC4as_T4_v3"]
    assert (nc4["gpu"], nc4["vcpus"], nc4["memoryGib"], nc4["status"]) == (
        {"model": "T4", "count": 1}, 4, 28, "current",
    )
    assert nc4["price"]["region"] == "eastus"


def test_the_catalog_marks_p2_as_previous_generation_with_its_replacement(api):
    _, k80, _ = api.call("GET", "/api/instance-types?gpu=K80")
    assert [(t["name"], t["status"], t["replacement"]) for t in k80["items"]] == [
        ("p2.xlarge", "previous-generation", "g4dn.xlarge"),
        ("p2.8xlarge", "previous-generation", "g6.48xlarge"),
    ]
    assert "CUDA" in k80["items"][0]["statusReason"]


def test_retired_types_are_listed_only_with_include_retired(api):
    _, hidden, _ = api.call("GET", "/api/instance-types?provider=azure&gpu=K80")
    assert hidden["items"] == []

    _, shown, _ = api.call(
        "GET", "/api/instance-types?provider=azure&gpu=K80&minGpus=2&include=retired"
    )
    assert [(t["name"], t["status"], t["statusSince"], t["replacement"])
            for t in shown["items"]] == [
        ("Standard_NC12", "retired", "2023-09-06", "Standard_NC48ads_A100_v4"),
        ("Standard_NC24", "retired", "2023-09-06", "Standard_NC96ads_A100_v4"),
    ]
    _, everything, _ = api.call("GET", "/api/instance-types?include=retired")
    assert len(everything["items"]) == 30


def test_the_catalog_refuses_an_unknown_include(api):
    status, body, _ = api.call("GET", "/api/instance-types?include=everything")
    assert status == 400
    assert body["fields"][0]["field"] == "include"


def test_the_catalog_filters_by_provider_gpu_and_count(api):
    _, azure_a100, _ = api.call("GET", "/api/instance-types?provider=azure&gpu=A100&minGpus=2")
    assert [t["name"] for t in azure_a100["items"]] == [
        "Standard_NC48ads_A100_v4", "Standard_NC96ads_A100_v4",
    ]


def test_the_catalog_refuses_an_unknown_filter(api):
    status, body, _ = api.call("GET", "/api/instance-types?vendor=nvidia")
    assert status == 400
    assert body["fields"][0]["field"] == "vendor"


def test_a_requirement_with_a_region_only_weighs_providers_serving_it(api):
    _, instance, _ = api.call(
        "POST", "/api/instances", body={"gpu": "T4", "region": "us-east-1"}
    )
    assert instance["provider"] == "aws"
    reasons = {a["reason"] for a in instance["offer"]["alternatives"] if not a["available"]}
    assert all("provisions in" in r or "not configured" in r for r in reasons)


def test_naming_a_type_and_a_requirement_together_is_refused_clearly(api):
    status, body, _ = api.call(
        "POST", "/api/instances", body={"instanceType": "g4dn.xlarge", "gpu": "T4"}
    )
    assert status == 400
    assert "not both" in body["detail"]


def test_asking_for_more_gpus_than_any_type_has_says_the_most_there_is(api):
    _, body, _ = api.call("POST", "/api/instances", body={"gpu": "V100", "gpuCount": 2})
    assert body["detail"] == "No instance type has 2 V100 GPUs; the most in one type is 1."


# -- retired and previous-generation types -----------------------------------------------


def test_provisioning_a_retired_type_answers_422_naming_its_replacement_and_writes_nothing(
    api, aws
):
    status, body, _ = api.call("POST", "/api/instances", body={"instanceType": "Standard_NC6"})

    assert (status, body["error"]) == (422, "instance_type_retired")
    assert body["detail"] == (
        "Standard_NC6 was retired by azure on 2023-09-06 and can no longer be launched; "
        "use Standard_NC4as_T4_v3 instead."
    )
    assert body["fields"] == [
        {"field": "instanceType", "problem": "retired", "allowed": "Standard_NC4as_T4_v3"},
    ]
    assert api.call("GET", "/api/instances")[1]["items"] == []
    assert not [c for c in aws.arm_fake.calls if c.startswith("PUT virtualMachines")]


@pytest.mark.parametrize(("name", "replacement"), [
    ("Standard_NC12", "Standard_NC48ads_A100_v4"), ("Standard_NV6", "Standard_NV36ads_A10_v5"),
])
def test_each_retired_type_names_its_own_replacement(api, name, replacement):
    status, body, _ = api.call(
        "POST", "/api/instances", body={"instanceType": name, "provider": "azure"}
    )
    assert (status, body["error"]) == (422, "instance_type_retired")
    assert f"use {replacement} instead" in body["detail"]


def test_a_requirement_only_retired_types_meet_answers_422_naming_the_replacements(api):
    status, body, _ = api.call("POST", "/api/instances", body={"gpu": "M60"})

    assert (status, body["error"]) == (422, "no_matching_instance_type")
    assert "Standard_NV36ads_A10_v5" in body["detail"]
    assert api.call("GET", "/api/instances")[1]["items"] == []


def test_a_previous_generation_type_is_refused_by_default_with_a_clear_sentence(api):
    status, body, _ = api.call("POST", "/api/instances", body={"instanceType": "p2.xlarge"})

    assert (status, body["error"]) == (422, "instance_type_previous_generation")
    assert body["detail"].startswith(
        "p2.xlarge is a previous-generation type: its K80 GPUs (compute capability 3.7) are "
        "not supported by CUDA 12"
    )
    assert body["detail"].endswith(
        "This deployment does not launch previous-generation types "
        "(ALLOW_PREVIOUS_GENERATION); use g4dn.xlarge instead."
    )
    assert api.call("GET", "/api/instances")[1]["items"] == []


def test_a_requirement_for_k80s_is_refused_by_default_saying_why(api):
    status, body, _ = api.call("POST", "/api/instances", body={"gpu": "K80"})

    assert (status, body["error"]) == (422, "unsatisfiable_request")
    assert "previous-generation" in body["detail"]
    assert "ALLOW_PREVIOUS_GENERATION" in body["detail"]


def test_where_allowed_a_previous_generation_type_is_launched_with_a_warning(api, aws, clock):
    allow_previous_generation(aws, clock)

    status, instance, _ = api.call("POST", "/api/instances", body={"instanceType": "p2.xlarge"})

    assert status == 202
    assert instance["instanceType"] == "p2.xlarge"
    (warning,) = instance["warnings"]
    assert warning.startswith("p2.xlarge is a previous-generation type")
    assert warning.endswith("Consider g4dn.xlarge.")
    aws.wait_for_workflows()
    assert api.get(instance["id"])["status"] == "READY"


def test_where_allowed_a_requirement_may_pick_a_previous_generation_type_with_a_warning(
    api, aws, clock
):
    allow_previous_generation(aws, clock)

    _, instance, _ = api.call("POST", "/api/instances", body={"gpu": "K80", "provider": "aws"})

    assert instance["instanceType"] == "p2.xlarge"
    assert len(instance["warnings"]) == 1
    assert [a["instanceType"] for a in instance["offer"]["alternatives"]] == ["p2.8xlarge"]


def test_a_new_generation_type_goes_through_the_lifecycle_to_ready(api, aws):
    instance = api.provision(instanceType="g6.xlarge")

    aws.wait_for_workflows()

    ready = api.get(instance["id"])
    assert ready["status"] == "READY"
    assert ready["gpu"] == {"model": "L4", "count": 1}
    assert ready["agent"]["gpus"][0]["name"] == "NVIDIA L4"
