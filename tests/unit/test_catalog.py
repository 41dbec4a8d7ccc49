"""The catalog of the ten instance types the service can provision."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chalicelib.domain.catalog import load_catalog, parse_catalog
from chalicelib.domain.errors import UnknownInstanceTypeError, ValidationError

AWS_TYPES = ["p2.xlarge", "p2.8xlarge", "p3.2xlarge", "g4dn.xlarge", "g4dn.12xlarge"]
AZURE_TYPES = [
    "Standard_NC6", "Standard_NC12", "Standard_NC24", "Standard_NV6", "Standard_NV12",
]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_the_catalog_offers_exactly_ten_types_in_file_order(catalog):
    assert catalog.names() == AWS_TYPES + AZURE_TYPES


def test_the_catalog_covers_aws_and_azure(catalog):
    assert catalog.providers == ("aws", "azure")


@pytest.mark.parametrize(("provider", "names"), [("aws", AWS_TYPES), ("azure", AZURE_TYPES)])
def test_names_can_be_listed_for_one_provider(catalog, provider, names):
    assert catalog.names(provider) == names


@pytest.mark.parametrize(
    ("name", "provider", "gpu", "gpus", "vcpus", "memory", "hourly"),
    [
        ("p2.xlarge", "aws", "K80", 1, 4, 61, "0.90"),
        ("p2.8xlarge", "aws", "K80", 8, 32, 488, "7.20"),
        ("p3.2xlarge", "aws", "V100", 1, 8, 61, "3.06"),
        ("g4dn.xlarge", "aws", "T4", 1, 4, 16, "0.526"),
        ("g4dn.12xlarge", "aws", "T4", 4, 48, 192, "3.912"),
        ("Standard_NC6", "azure", "K80", 1, 6, 56, "0.90"),
        ("Standard_NC12", "azure", "K80", 2, 12, 112, "1.80"),
        ("Standard_NC24", "azure", "K80", 4, 24, 224, "3.60"),
        ("Standard_NV6", "azure", "M60", 1, 6, 56, "1.14"),
        ("Standard_NV12", "azure", "M60", 2, 12, 112, "2.28"),
    ],
)
def test_each_type_has_its_published_hardware_and_hourly_price(
    catalog, name, provider, gpu, gpus, vcpus, memory, hourly
):
    found = catalog.find(name)
    assert (found.provider, found.gpu_model, found.gpu_count, found.vcpus, found.memory_gib) == (
        provider, gpu, gpus, vcpus, memory,
    )
    assert isinstance(found.hourly_usd, Decimal)
    assert found.hourly_usd == Decimal(hourly)


def test_price_of_g4dn_xlarge_is_0_526_per_hour(catalog):
    assert catalog.find("g4dn.xlarge").hourly_usd == Decimal("0.526")


@pytest.mark.parametrize("name", AWS_TYPES)
def test_aws_types_bill_per_second_with_a_sixty_second_minimum(catalog, name):
    rule = catalog.find(name).billing_rule
    assert (rule.name, rule.increment_seconds, rule.minimum_seconds) == (
        "ec2-linux-per-second", 1, 60,
    )


@pytest.mark.parametrize("name", AZURE_TYPES)
def test_azure_types_bill_per_second_with_no_minimum(catalog, name):
    rule = catalog.find(name).billing_rule
    assert (rule.name, rule.increment_seconds, rule.minimum_seconds) == (
        "azure-vm-per-second", 1, 0,
    )


def test_a_type_can_be_found_within_its_own_provider(catalog):
    assert catalog.find("Standard_NC6", provider="azure").name == "Standard_NC6"


def test_an_unknown_type_is_refused_with_the_list_of_valid_types(catalog):
    with pytest.raises(UnknownInstanceTypeError) as refused:
        catalog.find("p5.48xlarge")
    assert str(refused.value) == (
        "Unknown instance type 'p5.48xlarge'; valid types: " + ", ".join(AWS_TYPES + AZURE_TYPES)
        + "."
    )


def test_a_type_asked_of_the_wrong_provider_lists_only_that_providers_types(catalog):
    with pytest.raises(UnknownInstanceTypeError) as refused:
        catalog.find("g4dn.xlarge", provider="azure")
    assert str(refused.value) == (
        "Unknown instance type 'g4dn.xlarge' for provider azure; valid types: "
        + ", ".join(AZURE_TYPES) + "."
    )


def test_type_names_are_matched_exactly_not_case_insensitively(catalog):
    with pytest.raises(UnknownInstanceTypeError):
        catalog.find("G4DN.XLARGE")


def test_an_unknown_type_is_reported_to_callers_as_an_invalid_request(catalog):
    with pytest.raises(ValidationError) as refused:
        catalog.find("nope")
    assert refused.value.code == "unknown_instance_type"


def test_a_catalog_document_is_parsed_with_decimal_prices_and_shared_rules():
    parsed = parse_catalog({
        "billingRules": {"r": {"incrementSeconds": "10", "minimumSeconds": 0, "source": "s"}},
        "instanceTypes": [
            {"provider": "aws", "name": "a", "gpuModel": "T4", "gpuCount": 1, "vcpus": 4,
             "memoryGib": 16, "hourlyUsd": "0.1", "billingRule": "r"},
            {"provider": "aws", "name": "b", "gpuModel": "T4", "gpuCount": 2, "vcpus": 8,
             "memoryGib": 32, "hourlyUsd": "0.2", "billingRule": "r"},
        ],
    })
    a, b = parsed.instance_types
    assert a.hourly_usd == Decimal("0.1")
    assert a.billing_rule.increment_seconds == 10
    assert a.billing_rule is b.billing_rule
