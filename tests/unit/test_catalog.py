"""The catalog: the seed's ten types (five of them retired, two of a previous generation) and
the current generations, with their hardware, prices, price sources and lifecycle status."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from chalicelib.api import responses
from chalicelib.domain.catalog import (
    CATALOG_FILE,
    BillingRule,
    Requirement,
    TypeStatus,
    load_catalog,
    parse_catalog,
)
from chalicelib.domain.errors import (
    InstanceTypeRetiredError,
    NoMatchingInstanceTypeError,
    PreviousGenerationNotAllowedError,
    UnknownInstanceTypeError,
    UnsatisfiableRequestError,
    ValidationError,
)

SEED_AWS = ["p2.xlarge", "p2.8xlarge", "p3.2xlarge", "g4dn.xlarge", "g4dn.12xlarge"]
NEW_AWS = [
    "g5.xlarge", "g5.12xlarge", "g6.xlarge", "g6.12xlarge", "g6.48xlarge", "g6e.xlarge",
    "g6e.12xlarge", "p4d.24xlarge", "p5.48xlarge",
]
RETIRED_AZURE = [
    "Standard_NC6", "Standard_NC12", "Standard_NC24", "Standard_NV6", "Standard_NV12",
]
NEW_AZURE = [
    "Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3", "Standard_NC16as_T4_v3",
    "Standard_NC64as_T4_v3", "Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4",
    "Standard_NC96ads_A100_v4", "Standard_NC40ads_H100_v5", "Standard_NC80adis_H100_v5",
    "Standard_NV36ads_A10_v5", "Standard_NV72ads_A10_v5",
]
AWS_TYPES = SEED_AWS + NEW_AWS
AZURE_TYPES = RETIRED_AZURE + NEW_AZURE
LAUNCHABLE_AZURE = NEW_AZURE
AVAILABLE = {"aws": "", "azure": ""}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_the_catalog_keeps_the_seed_types_and_adds_the_current_generations_in_file_order(
    catalog,
):
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
        ("g5.xlarge", "aws", "A10G", 1, 4, 16, "1.006"),
        ("g5.12xlarge", "aws", "A10G", 4, 48, 192, "5.672"),
        ("g6.xlarge", "aws", "L4", 1, 4, 16, "0.8048"),
        ("g6.12xlarge", "aws", "L4", 4, 48, 192, "4.6016"),
        ("g6.48xlarge", "aws", "L4", 8, 192, 768, "13.3504"),
        ("g6e.xlarge", "aws", "L40S", 1, 4, 32, "1.861"),
        ("g6e.12xlarge", "aws", "L40S", 4, 48, 384, "10.493"),
        ("p4d.24xlarge", "aws", "A100", 8, 96, 1152, "21.96"),
        ("p5.48xlarge", "aws", "H100", 8, 192, 2048, "55.04"),
        ("Standard_NC4as_T4_v3", "azure", "T4", 1, 4, 28, "0.526"),
        ("Standard_NC8as_T4_v3", "azure", "T4", 1, 8, 56, "0.752"),
        ("Standard_NC16as_T4_v3", "azure", "T4", 1, 16, 110, "1.204"),
        ("Standard_NC64as_T4_v3", "azure", "T4", 4, 64, 440, "4.352"),
        ("Standard_NC24ads_A100_v4", "azure", "A100", 1, 24, 220, "3.673"),
        ("Standard_NC48ads_A100_v4", "azure", "A100", 2, 48, 440, "7.346"),
        ("Standard_NC96ads_A100_v4", "azure", "A100", 4, 96, 880, "14.692"),
        ("Standard_NC40ads_H100_v5", "azure", "H100", 1, 40, 320, "6.98"),
        ("Standard_NC80adis_H100_v5", "azure", "H100", 2, 80, 640, "13.96"),
        ("Standard_NV36ads_A10_v5", "azure", "A10", 1, 36, 440, "3.20"),
        ("Standard_NV72ads_A10_v5", "azure", "A10", 2, 72, 880, "6.52"),
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


def test_an_unknown_type_is_refused_with_the_list_of_types_that_can_be_launched(catalog):
    with pytest.raises(UnknownInstanceTypeError) as refused:
        catalog.find("p5.4xlarge")
    assert str(refused.value) == (
        "Unknown instance type 'p5.4xlarge'; valid types: "
        + ", ".join(AWS_TYPES + LAUNCHABLE_AZURE) + "."
    )


def test_a_type_asked_of_the_wrong_provider_lists_only_that_providers_types(catalog):
    with pytest.raises(UnknownInstanceTypeError) as refused:
        catalog.find("g4dn.xlarge", provider="azure")
    assert str(refused.value) == (
        "Unknown instance type 'g4dn.xlarge' for provider azure; valid types: "
        + ", ".join(LAUNCHABLE_AZURE) + "."
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


def test_a_catalog_document_without_status_or_source_reads_as_current_and_unsourced():
    parsed = parse_catalog({
        "billingRules": {"r": {"incrementSeconds": 1, "minimumSeconds": 0, "source": "s"}},
        "instanceTypes": [
            {"provider": "aws", "name": "a", "gpuModel": "T4", "gpuCount": 1, "vcpus": 4,
             "memoryGib": 16, "hourlyUsd": "0.1", "billingRule": "r"},
        ],
    })
    (only,) = parsed.instance_types
    assert (only.status, only.price_source, only.replacement) == (TypeStatus.CURRENT, None, None)


# -- lifecycle status -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "replacement"),
    [("Standard_NC6", "Standard_NC4as_T4_v3"), ("Standard_NC12", "Standard_NC48ads_A100_v4"),
     ("Standard_NC24", "Standard_NC96ads_A100_v4"), ("Standard_NV6", "Standard_NV36ads_A10_v5"),
     ("Standard_NV12", "Standard_NV72ads_A10_v5")],
)
def test_the_azure_nc_and_nv_v1_sizes_are_retired_since_6_september_2023(
    catalog, name, replacement
):
    retired = catalog.find(name)
    assert (retired.status, retired.status_since, retired.replacement) == (
        TypeStatus.RETIRED, date(2023, 9, 6), replacement,
    )


@pytest.mark.parametrize(("name", "replacement"),
                         [("p2.xlarge", "g4dn.xlarge"), ("p2.8xlarge", "g6.48xlarge")])
def test_the_k80_types_of_aws_are_of_a_previous_generation_with_a_replacement(
    catalog, name, replacement
):
    old = catalog.find(name)
    assert (old.status, old.replacement) == (TypeStatus.PREVIOUS_GENERATION, replacement)
    assert "CUDA" in old.why


def test_every_other_type_is_current(catalog):
    current = [t.name for t in catalog.instance_types if t.status is TypeStatus.CURRENT]
    assert current == ["p3.2xlarge", "g4dn.xlarge", "g4dn.12xlarge", *NEW_AWS, *NEW_AZURE]


def test_every_replacement_is_a_current_type_of_the_same_provider_with_as_many_gpus(catalog):
    for old in catalog.instance_types:
        if old.replacement is None:
            continue
        new = catalog.find(old.replacement, provider=old.provider)
        assert new.status is TypeStatus.CURRENT, old.name
        assert new.gpu_count >= old.gpu_count, old.name


def test_every_price_names_its_source_region_and_date(catalog):
    regions = {"aws": "us-east-1", "azure": "eastus"}
    for instance_type in catalog.instance_types:
        source = instance_type.price_source
        assert source is not None, instance_type.name
        assert source.url.startswith("https://"), instance_type.name
        assert source.region == regions[instance_type.provider]
        assert source.as_of == date(2026, 12, 3)


def test_launching_a_retired_type_is_refused_naming_its_replacement(catalog):
    with pytest.raises(InstanceTypeRetiredError) as refused:
        catalog.launchable("Standard_NC6")
    assert str(refused.value) == (
        "Standard_NC6 was retired by azure on 2023-09-06 and can no longer be launched; "
        "use Standard_NC4as_T4_v3 instead."
    )
    assert refused.value.code == "instance_type_retired"
    assert isinstance(refused.value, UnsatisfiableRequestError)  # a 422, not a 400


def test_a_previous_generation_type_is_refused_where_the_deployment_does_not_allow_it(catalog):
    with pytest.raises(PreviousGenerationNotAllowedError) as refused:
        catalog.launchable("p2.xlarge")
    assert "ALLOW_PREVIOUS_GENERATION" in str(refused.value)
    assert "use g4dn.xlarge instead" in str(refused.value)
    assert refused.value.code == "instance_type_previous_generation"


def test_a_previous_generation_type_is_launched_with_a_warning_where_allowed(catalog):
    allowing = catalog.allowing_previous_generation(True)
    p2 = allowing.launchable("p2.xlarge")
    (warning,) = allowing.warnings_for(p2)
    assert warning.startswith("p2.xlarge is a previous-generation type: its K80 GPUs")
    assert warning.endswith("Consider g4dn.xlarge.")
    assert allowing.warnings_for(allowing.launchable("g4dn.xlarge")) == ()


def test_a_current_type_is_launchable_without_warning(catalog):
    g5 = catalog.launchable("g5.xlarge")
    assert catalog.warnings_for(g5) == ()


def test_a_requirement_never_weighs_a_retired_type(catalog):
    offer = catalog.cheapest(Requirement("T4", 1), AVAILABLE)
    weighed = [t.name for t in offer.candidates] + [t.name for t, _ in offer.excluded]
    assert not set(weighed) & set(RETIRED_AZURE)


def test_a_requirement_only_retired_types_meet_says_so_and_names_their_replacements(catalog):
    with pytest.raises(NoMatchingInstanceTypeError) as refused:
        catalog.cheapest(Requirement("M60", 1), AVAILABLE)
    assert str(refused.value) == (
        "The only instance types with 1 M60 GPUs (Standard_NV6, Standard_NV12) are retired; "
        "their replacements are Standard_NV36ads_A10_v5, Standard_NV72ads_A10_v5."
    )


def test_a_requirement_excludes_previous_generation_types_unless_allowed(catalog):
    refused = catalog.cheapest(Requirement("K80", 1, "aws"), AVAILABLE)
    assert refused.chosen is None
    assert [t.name for t, _ in refused.excluded] == ["p2.xlarge", "p2.8xlarge"]
    assert all("ALLOW_PREVIOUS_GENERATION" in why for _, why in refused.excluded)

    allowed = catalog.allowing_previous_generation(True).cheapest(
        Requirement("K80", 1, "aws"), AVAILABLE
    )
    assert allowed.chosen is not None and allowed.chosen.name == "p2.xlarge"


@pytest.mark.parametrize(("gpu", "count", "cheapest"), [
    ("A10G", 1, "g5.xlarge"), ("L4", 1, "g6.xlarge"), ("L4", 5, "g6.48xlarge"),
    ("L40S", 1, "g6e.xlarge"), ("A100", 1, "Standard_NC24ads_A100_v4"),
    ("A100", 8, "p4d.24xlarge"), ("H100", 1, "Standard_NC40ads_H100_v5"),
    ("H100", 8, "p5.48xlarge"), ("A10", 1, "Standard_NV36ads_A10_v5"),
])
def test_a_requirement_picks_the_cheapest_current_type_with_enough_gpus(
    catalog, gpu, count, cheapest
):
    offer = catalog.cheapest(Requirement(gpu, count), AVAILABLE)
    assert offer.chosen is not None and offer.chosen.name == cheapest


def test_the_catalog_lists_retired_types_only_when_asked(catalog):
    assert catalog.matching("azure", "K80") == []
    assert [t.name for t in catalog.matching("azure", "K80", include_retired=True)] == [
        "Standard_NC6", "Standard_NC12", "Standard_NC24",
    ]


# -- the billing rule's JSON shape --------------------------------------------------------


def test_a_billing_rule_has_one_json_shape_for_records_and_the_api(catalog):
    for rule in {t.billing_rule for t in catalog.instance_types}:
        document = rule.to_json()
        assert BillingRule.from_json(document) == rule
        # GET /api/instance-types shows that very shape, field by field.
        assert list(responses.BillingRule.model_fields) == list(document)
        assert responses.BillingRule.model_validate(document).model_dump() == document


def test_the_catalog_file_gives_each_rule_that_shape_keyed_by_its_name():
    rules = json.loads(CATALOG_FILE.read_text())["billingRules"]
    for name, entry in rules.items():
        assert BillingRule.from_json({**entry, "name": name}).to_json() == {"name": name, **entry}
