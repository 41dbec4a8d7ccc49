"""Settings of the service, read once from the environment (the only place env names live)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from chalicelib.domain.instance import (
    DEFAULT_LIFETIME_MINUTES,
    MAX_LIFETIME_MINUTES,
    MIN_LIFETIME_MINUTES,
    LifecyclePolicy,
)

LOCAL_STAGE = "local"
# A deployment that forgets STAGE must not trust local dev tokens: the default is prod.
DEFAULT_STAGE = "prod"


class SettingsError(ValueError):
    """A setting's value cannot be used; the message names the variable."""


def _integer(
    environ: Mapping[str, str], name: str, default: int, minimum: int = 0,
    maximum: int | None = None,
) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, got {value}")
    return value


def _minutes(environ: Mapping[str, str], name: str, default: int) -> timedelta:
    return timedelta(minutes=_integer(environ, name, default, minimum=1))


@dataclass(frozen=True)
class Ec2Settings:
    ami_id: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None

    @property
    def missing(self) -> list[str]:
        return [name for name, value in (("EC2_AMI_ID", self.ami_id),) if not value]


@dataclass(frozen=True)
class AzureSettings:
    """Where and what the Azure provider launches. Credentials are not settings: they come from
    the deployment's identity (DefaultAzureCredential), so no secret is kept here."""

    subscription_id: str | None = None
    resource_group: str | None = None
    location: str | None = None
    subnet_id: str | None = None
    # `publisher:offer:sku:version` of a marketplace image, or the resource id of an image.
    image_reference: str | None = None
    admin_username: str | None = None
    ssh_public_key: str | None = None
    # Another Resource Manager endpoint than the public cloud's (the local fake, a sovereign cloud).
    arm_endpoint: str | None = None

    @property
    def missing(self) -> list[str]:
        """Settings the provider cannot work without, unset or malformed, by env name."""
        required = (
            ("AZURE_SUBSCRIPTION_ID", self.subscription_id),
            ("AZURE_RESOURCE_GROUP", self.resource_group),
            ("AZURE_LOCATION", self.location),
            ("AZURE_SUBNET_ID", self.subnet_id),
            ("AZURE_IMAGE_REFERENCE", self.image_reference),
            ("AZURE_ADMIN_USERNAME", self.admin_username),
            ("AZURE_SSH_PUBLIC_KEY", self.ssh_public_key),
        )
        problems = [name for name, value in required if not value]
        if self.subnet_id and not self.subnet_id.lower().startswith("/subscriptions/"):
            problems.append("AZURE_SUBNET_ID (expected a subnet resource id: /subscriptions/...)")
        image = self.image_reference
        if image and not image.startswith("/") and len(image.split(":")) != 4:
            problems.append(
                "AZURE_IMAGE_REFERENCE (expected publisher:offer:sku:version or an image "
                "resource id)"
            )
        return problems


@dataclass(frozen=True)
class Settings:
    stage: str = DEFAULT_STAGE
    region: str = "us-east-1"
    table_name: str = "instance-provisioner-instances"
    # Leases and idempotency records (chalicelib/persistence/control.py).
    control_table_name: str = "instance-provisioner-control"
    event_bus_name: str = "instance-provisioner"
    state_machine_arn: str | None = None
    # The short workflow that terminates a stopped instance's machine at once.
    release_state_machine_arn: str | None = None
    # Tagged on every machine as provisioner:deployment; the reconciler touches only machines
    # that carry this deployment's name (and provisioner:managed=true).
    deployment_name: str = "instance-provisioner-prod"
    ec2: Ec2Settings = field(default_factory=Ec2Settings)
    azure: AzureSettings = field(default_factory=AzureSettings)
    policy: LifecyclePolicy = field(default_factory=LifecyclePolicy)
    # Seconds each Wait state of the lifecycle workflow waits between two cloud checks,
    # and how many checks a phase may take before the launch is declared failed.
    workflow_poll_seconds: int = 15
    workflow_max_checks: int = 40
    # The release workflow checks every few seconds, for a few minutes, then leaves the
    # record to the reaper's tick.
    release_poll_seconds: int = 5
    release_max_checks: int = 60
    # The lifetime of an instance whose POST names none (maxLifetimeMinutes).
    default_lifetime_minutes: int = DEFAULT_LIFETIME_MINUTES

    @property
    def accepts_dev_tokens(self) -> bool:
        """Only the local stage trusts `dev:<user>` bearer tokens."""
        return self.stage == LOCAL_STAGE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        stage = env.get("STAGE", DEFAULT_STAGE)
        return cls(
            stage=stage,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            table_name=env.get("INSTANCES_TABLE_NAME", cls.table_name),
            control_table_name=env.get("CONTROL_TABLE_NAME", cls.control_table_name),
            event_bus_name=env.get("EVENT_BUS_NAME", cls.event_bus_name),
            state_machine_arn=env.get("LIFECYCLE_STATE_MACHINE_ARN") or None,
            release_state_machine_arn=env.get("RELEASE_STATE_MACHINE_ARN") or None,
            deployment_name=env.get("DEPLOYMENT_NAME") or f"instance-provisioner-{stage}",
            ec2=Ec2Settings(
                ami_id=env.get("EC2_AMI_ID") or None,
                subnet_id=env.get("EC2_SUBNET_ID") or None,
                security_group_ids=tuple(
                    g.strip() for g in env.get("EC2_SECURITY_GROUP_IDS", "").split(",") if g.strip()
                ),
                key_name=env.get("EC2_KEY_NAME") or None,
            ),
            azure=AzureSettings(
                subscription_id=env.get("AZURE_SUBSCRIPTION_ID") or None,
                resource_group=env.get("AZURE_RESOURCE_GROUP") or None,
                location=env.get("AZURE_LOCATION") or None,
                subnet_id=env.get("AZURE_SUBNET_ID") or None,
                image_reference=env.get("AZURE_IMAGE_REFERENCE") or None,
                admin_username=env.get("AZURE_ADMIN_USERNAME") or None,
                ssh_public_key=env.get("AZURE_SSH_PUBLIC_KEY") or None,
                arm_endpoint=env.get("AZURE_ARM_ENDPOINT") or None,
            ),
            policy=LifecyclePolicy(
                provisioning_limit=_minutes(env, "PROVISIONING_LIMIT_MINUTES", 15),
                configuring_limit=_minutes(env, "CONFIGURING_LIMIT_MINUTES", 15),
                stopping_limit=_minutes(env, "STOPPING_LIMIT_MINUTES", 10),
                orphan_grace=timedelta(seconds=_integer(env, "ORPHAN_GRACE_SECONDS", 120)),
            ),
            workflow_poll_seconds=_integer(env, "WORKFLOW_POLL_SECONDS", cls.workflow_poll_seconds),
            workflow_max_checks=_integer(env, "WORKFLOW_MAX_CHECKS", cls.workflow_max_checks, 1),
            release_poll_seconds=_integer(env, "RELEASE_POLL_SECONDS", cls.release_poll_seconds),
            release_max_checks=_integer(env, "RELEASE_MAX_CHECKS", cls.release_max_checks, 1),
            default_lifetime_minutes=_integer(
                env, "DEFAULT_MAX_LIFETIME_MINUTES", DEFAULT_LIFETIME_MINUTES,
                MIN_LIFETIME_MINUTES, MAX_LIFETIME_MINUTES,
            ),
        )
