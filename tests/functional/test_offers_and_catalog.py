"""Choosing by requirement (the cheapest matching type) and reading the catalog."""

from __future__ import annotations

import pytest


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
    assert [a["instanceType"] for a in offer["alternatives"]] == ["g4dn.12xlarge"]


def test_a_request_for_four_t4s_skips_types_with_fewer(api):
    _, instance, _ = api.call("POST", "/api/instances", body={"gpu": "t4", "gpuCount": 4})
    assert instance["instanceType"] == "g4dn.12xlarge"
    assert instance["offer"]["alternatives"] == []


def test_equal_prices_are_broken_by_provider_then_name(api):
    # p2.xlarge (aws) and Standard_NC6 (azure) both cost 0.90 for one K80.
    _, instance, _ = api.call("POST", "/api/instances", body={"gpu": "K80", "provider": "any"})
    assert instance["instanceType"] == "p2.xlarge"
    considered = [(a["instanceType"], a["hourlyUsd"]) for a in instance["offer"]["alternatives"]]
    assert considered[0] == ("Standard_NC6", "0.90")
    prices = [float(price) for _, price in considered]
    assert prices == sorted(prices)


def test_a_requirement_may_be_held_to_one_provider(api):
    _, instance, _ = api.call("POST", "/api/instances", body={"gpu": "K80", "provider": "aws"})
    assert instance["instanceType"] == "p2.xlarge"
    assert {a["provider"] for a in instance["offer"]["alternatives"]} == {"aws"}


@pytest.mark.parametrize(
    ("requirement", "mention"),
    [({"gpu": "A100"}, "A100"), ({"gpu": "V100", "gpuCount": 2}, "V100"),
     ({"gpu": "M60", "provider": "aws"}, "aws")],
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
    assert len(catalog["items"]) == 10
    g4dn = next(t for t in catalog["items"] if t["name"] == "g4dn.xlarge")
    assert g4dn["hourlyUsd"] == "0.526"
    assert g4dn["gpu"] == {"model": "T4", "count": 1}
    assert g4dn["billing"]["minimumSeconds"] == 60


def test_the_catalog_filters_by_provider_gpu_and_count(api):
    _, azure_k80, _ = api.call("GET", "/api/instance-types?provider=azure&gpu=K80&minGpus=2")
    assert [t["name"] for t in azure_k80["items"]] == ["Standard_NC12", "Standard_NC24"]


def test_the_catalog_refuses_an_unknown_filter(api):
    status, body, _ = api.call("GET", "/api/instance-types?vendor=nvidia")
    assert status == 400
    assert body["fields"][0]["field"] == "vendor"


def test_a_requirement_with_a_region_only_weighs_providers_serving_it(api):
    _, instance, _ = api.call(
        "POST", "/api/instances", body={"gpu": "K80", "region": "us-east-1"}
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
