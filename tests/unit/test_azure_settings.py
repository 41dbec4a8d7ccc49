"""Azure settings from the environment, and what the provider reports missing."""

from __future__ import annotations

from chalicelib.settings import AzureSettings, Settings

COMPLETE = {
    "AZURE_SUBSCRIPTION_ID": "11111111-2222-3333-4444-555555555555",
    "AZURE_RESOURCE_GROUP": "gpu-rg",
    "AZURE_LOCATION": "westeurope",
    "AZURE_SUBNET_ID": "/subscriptions/1111/resourceGroups/net/providers/Microsoft.Network/"
    "virtualNetworks/vnet/subnets/gpu",
    "AZURE_IMAGE_REFERENCE": "microsoft-dsvm:ubuntu-hpc:2204:latest",
    "AZURE_ADMIN_USERNAME": "analyst",
    "AZURE_SSH_PUBLIC_KEY": "ssh-ed25519 AAAA analyst@example",
}


def test_azure_settings_are_read_from_the_environment():
    azure = Settings.from_env({**COMPLETE, "AZURE_ARM_ENDPOINT": "https://arm.example"}).azure

    assert azure == AzureSettings(
        subscription_id=COMPLETE["AZURE_SUBSCRIPTION_ID"],
        resource_group="gpu-rg",
        location="westeurope",
        subnet_id=COMPLETE["AZURE_SUBNET_ID"],
        image_reference="microsoft-dsvm:ubuntu-hpc:2204:latest",
        admin_username="analyst",
        ssh_public_key="ssh-ed25519 AAAA analyst@example",
        arm_endpoint="https://arm.example",
    )
    assert azure.missing == []


def test_without_any_azure_setting_every_required_one_is_reported_missing():
    assert Settings.from_env({}).azure.missing == [
        "AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_LOCATION", "AZURE_SUBNET_ID",
        "AZURE_IMAGE_REFERENCE", "AZURE_ADMIN_USERNAME", "AZURE_SSH_PUBLIC_KEY",
    ]


def test_the_arm_endpoint_is_optional():
    assert Settings.from_env(COMPLETE).azure.arm_endpoint is None


def test_an_empty_setting_counts_as_missing():
    assert Settings.from_env({**COMPLETE, "AZURE_LOCATION": ""}).azure.missing == [
        "AZURE_LOCATION"
    ]


def test_a_malformed_image_reference_or_subnet_is_reported_with_the_expected_form():
    azure = Settings.from_env(
        {**COMPLETE, "AZURE_IMAGE_REFERENCE": "ubuntu", "AZURE_SUBNET_ID": "gpu-subnet"}
    ).azure

    assert azure.missing == [
        "AZURE_SUBNET_ID (expected a subnet resource id: /subscriptions/...)",
        "AZURE_IMAGE_REFERENCE (expected publisher:offer:sku:version or an image resource id)",
    ]


def test_an_image_resource_id_is_a_valid_image_reference():
    image = "/subscriptions/1111/resourceGroups/img/providers/Microsoft.Compute/images/cuda"

    assert Settings.from_env({**COMPLETE, "AZURE_IMAGE_REFERENCE": image}).azure.missing == []
