"""Settings of the service, read once from the environment (the only place env names live)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from chalicelib.domain.instance import LifecyclePolicy

LOCAL_STAGE = "local"
# A deployment that forgets STAGE must not trust local dev tokens: the default is prod.
DEFAULT_STAGE = "prod"


def _minutes(environ: Mapping[str, str], name: str, default: int) -> timedelta:
    return timedelta(minutes=int(environ.get(name, default)))


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
class Settings:
    stage: str = DEFAULT_STAGE
    region: str = "us-east-1"
    table_name: str = "instance-provisioner-instances"
    event_bus_name: str = "instance-provisioner"
    state_machine_arn: str | None = None
    ec2: Ec2Settings = field(default_factory=Ec2Settings)
    policy: LifecyclePolicy = field(default_factory=LifecyclePolicy)
    # Seconds each Wait state of the lifecycle workflow waits between two cloud checks,
    # and how many checks a phase may take before the launch is declared failed.
    workflow_poll_seconds: int = 15
    workflow_max_checks: int = 40

    @property
    def accepts_dev_tokens(self) -> bool:
        """Only the local stage trusts `dev:<user>` bearer tokens."""
        return self.stage == LOCAL_STAGE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            stage=env.get("STAGE", DEFAULT_STAGE),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            table_name=env.get("INSTANCES_TABLE_NAME", cls.table_name),
            event_bus_name=env.get("EVENT_BUS_NAME", cls.event_bus_name),
            state_machine_arn=env.get("LIFECYCLE_STATE_MACHINE_ARN") or None,
            ec2=Ec2Settings(
                ami_id=env.get("EC2_AMI_ID") or None,
                subnet_id=env.get("EC2_SUBNET_ID") or None,
                security_group_ids=tuple(
                    g.strip() for g in env.get("EC2_SECURITY_GROUP_IDS", "").split(",") if g.strip()
                ),
                key_name=env.get("EC2_KEY_NAME") or None,
            ),
            policy=LifecyclePolicy(
                provisioning_limit=_minutes(env, "PROVISIONING_LIMIT_MINUTES", 15),
                configuring_limit=_minutes(env, "CONFIGURING_LIMIT_MINUTES", 15),
                stopping_limit=_minutes(env, "STOPPING_LIMIT_MINUTES", 10),
            ),
            workflow_poll_seconds=int(env.get("WORKFLOW_POLL_SECONDS", cls.workflow_poll_seconds)),
            workflow_max_checks=int(env.get("WORKFLOW_MAX_CHECKS", cls.workflow_max_checks)),
        )
