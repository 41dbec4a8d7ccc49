"""Settings of the service, read once from the environment (the only place env names live)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from chalicelib.domain.agent import AgentPolicy
from chalicelib.domain.instance import (
    DEFAULT_LIFETIME_MINUTES,
    MAX_LIFETIME_MINUTES,
    MIN_LIFETIME_MINUTES,
    LifecyclePolicy,
)
from chalicelib.domain.limits import BUDGET_ACTIONS, Limits

LOCAL_STAGE = "local"
# What both EC2 and Azure accept in a tag (Azure refuses < > % & \ ? / in keys).
_TAG_TEXT = re.compile(r"^[A-Za-z0-9+\-=._:@ ]{1,120}$")
_TAG_VALUE = re.compile(r"^[A-Za-z0-9+\-=._:/@ ]{0,250}$")
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


def _optional_integer(
    environ: Mapping[str, str], name: str, minimum: int = 0, maximum: int | None = None
) -> int | None:
    """An integer setting that is unset (None) unless given."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    return _integer(environ, name, minimum, minimum, maximum)


def _url(environ: Mapping[str, str], name: str) -> str | None:
    """An http(s) base URL without its trailing slash; None if unset."""
    raw = (environ.get(name) or "").strip()
    if not raw:
        return None
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")
def _optional_money(environ: Mapping[str, str], name: str) -> Decimal | None:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return None
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", raw):
        raise SettingsError(f"{name} must be an amount of US dollars like 250 or 0.5, got {raw!r}")
    return Decimal(raw)


def _choice(environ: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = environ.get(name) or default
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name) or ""
    word = raw.strip().lower()
    if not word:
        return default
    if word in ("1", "true", "yes"):
        return True
    if word in ("0", "false", "no"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def cost_allocation_tags(environ: Mapping[str, str]) -> dict[str, str]:
    """COST_ALLOCATION_TAGS=project=x,cost-center=y: tags put on every resource launched."""
    raw = environ.get("COST_ALLOCATION_TAGS") or ""
    tags: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _TAG_TEXT.match(key) or not _TAG_VALUE.match(value):
            raise SettingsError(
                f"COST_ALLOCATION_TAGS must be key=value pairs separated by commas (letters, "
                f"digits and + - = . _ : / @, keys not starting with provisioner:), got {pair!r}"
            )
        if key.startswith("provisioner:"):
            raise SettingsError(f"COST_ALLOCATION_TAGS may not set the service's tag {key!r}")
        tags[key] = value
    return tags


def _minutes(environ: Mapping[str, str], name: str, default: int) -> timedelta:
    return timedelta(minutes=_integer(environ, name, default, minimum=1))


@dataclass(frozen=True)
class Ec2Settings:
    ami_id: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    # The root volume is always encrypted: with this KMS key, or the account's default key.
    kms_key_id: str | None = None
    public_ip: bool = False

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
    # A user-assigned managed identity given to every VM, allowed to delete VMs of the group:
    # with it the agent's dead-man switch deletes its own VM (an OS shutdown leaves it billed).
    agent_identity_id: str | None = None
    # Encrypt the VM's disks and caches at the host (the subscription must have the
    # EncryptionAtHost feature registered, so it is a choice, off by default).
    encryption_at_host: bool = False

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
    agent: AgentPolicy = field(default_factory=AgentPolicy)
    # Put on every machine, volume and network interface (COST_ALLOCATION_TAGS).
    cost_tags: Mapping[str, str] = field(default_factory=dict)
    # Launch previous-generation types (p2, K80), which current CUDA images do not run on.
    allow_previous_generation: bool = False
    # Every user's quotas and budget unless an operator set their own (DEFAULT_MAX_*).
    limits: Limits = field(default_factory=Limits)

    @property
    def accepts_dev_tokens(self) -> bool:
        """Only the local stage trusts `dev:<user>` bearer tokens."""
        return self.stage == LOCAL_STAGE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        stage = env.get("STAGE", DEFAULT_STAGE)
        heartbeat_seconds = _integer(env, "AGENT_HEARTBEAT_SECONDS", 60, 1, 3600)
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
                kms_key_id=env.get("EC2_KMS_KEY_ID") or None,
                public_ip=_flag(env, "EC2_PUBLIC_IP", False),
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
                agent_identity_id=env.get("AZURE_AGENT_IDENTITY_ID") or None,
                encryption_at_host=_flag(env, "AZURE_ENCRYPTION_AT_HOST", False),
            ),
            policy=LifecyclePolicy(
                provisioning_limit=_minutes(env, "PROVISIONING_LIMIT_MINUTES", 15),
                configuring_limit=_minutes(env, "CONFIGURING_LIMIT_MINUTES", 15),
                stopping_limit=_minutes(env, "STOPPING_LIMIT_MINUTES", 10),
                orphan_grace=timedelta(seconds=_integer(env, "ORPHAN_GRACE_SECONDS", 120)),
                agent_silence=3 * timedelta(seconds=heartbeat_seconds),
            ),
            workflow_poll_seconds=_integer(env, "WORKFLOW_POLL_SECONDS", cls.workflow_poll_seconds),
            workflow_max_checks=_integer(env, "WORKFLOW_MAX_CHECKS", cls.workflow_max_checks, 1),
            release_poll_seconds=_integer(env, "RELEASE_POLL_SECONDS", cls.release_poll_seconds),
            release_max_checks=_integer(env, "RELEASE_MAX_CHECKS", cls.release_max_checks, 1),
            default_lifetime_minutes=_integer(
                env, "DEFAULT_MAX_LIFETIME_MINUTES", DEFAULT_LIFETIME_MINUTES,
                MIN_LIFETIME_MINUTES, MAX_LIFETIME_MINUTES,
            ),
            cost_tags=cost_allocation_tags(env),
            allow_previous_generation=_flag(env, "ALLOW_PREVIOUS_GENERATION", False),
            limits=Limits(
                max_live_instances=_optional_integer(env, "DEFAULT_MAX_LIVE_INSTANCES"),
                max_live_gpus=_optional_integer(env, "DEFAULT_MAX_LIVE_GPUS"),
                max_burn_rate=_optional_money(env, "DEFAULT_MAX_BURN_RATE_USD_PER_HOUR"),
                monthly_budget=_optional_money(env, "DEFAULT_MONTHLY_BUDGET_USD"),
                budget_action=_choice(env, "DEFAULT_BUDGET_ACTION", BUDGET_ACTIONS, "warn"),
            ),
            agent=AgentPolicy(
                callback_url=_url(env, "AGENT_CALLBACK_URL"),
                heartbeat_seconds=heartbeat_seconds,
                idle_gpu_utilization_percent=_integer(
                    env, "IDLE_GPU_UTILIZATION_PERCENT", 5, 0, 100
                ),
                deadman_minutes=_optional_integer(env, "AGENT_DEADMAN_MINUTES", 1),
                ready_timeout_minutes=_integer(env, "AGENT_READY_TIMEOUT_MINUTES", 15, 1),
                stop_method=_choice(env, "AGENT_STOP_METHOD", ("auto", "exit"), "auto"),
            ),
        )
