"""The catalog of instance types the service can provision, with prices and billing rules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

from chalicelib.domain.errors import UnknownInstanceTypeError

CATALOG_FILE = Path(__file__).with_name("instance_types.json")


@dataclass(frozen=True)
class BillingRule:
    """How a provider rounds usage: charged in increments, with a minimum per instance run."""

    name: str
    increment_seconds: int
    minimum_seconds: int
    source: str


@dataclass(frozen=True)
class InstanceType:
    provider: str
    name: str
    gpu_model: str
    gpu_count: int
    vcpus: int
    memory_gib: int
    hourly_usd: Decimal
    billing_rule: BillingRule


@dataclass(frozen=True)
class Catalog:
    instance_types: tuple[InstanceType, ...]

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted({t.provider for t in self.instance_types}))

    def names(self, provider: str | None = None) -> list[str]:
        return [t.name for t in self.instance_types if provider in (None, t.provider)]

    def find(self, name: str, provider: str | None = None) -> InstanceType:
        """The type called `name` (for `provider`, when given), or UnknownInstanceTypeError."""
        for instance_type in self.instance_types:
            if instance_type.name == name and provider in (None, instance_type.provider):
                return instance_type
        scope = f" for provider {provider}" if provider else ""
        valid = ", ".join(self.names(provider))
        raise UnknownInstanceTypeError(
            f"Unknown instance type {name!r}{scope}; valid types: {valid}."
        )


def parse_catalog(document: dict) -> Catalog:
    rules = {
        name: BillingRule(
            name=name,
            increment_seconds=int(rule["incrementSeconds"]),
            minimum_seconds=int(rule["minimumSeconds"]),
            source=rule["source"],
        )
        for name, rule in document["billingRules"].items()
    }
    return Catalog(
        instance_types=tuple(
            InstanceType(
                provider=entry["provider"],
                name=entry["name"],
                gpu_model=entry["gpuModel"],
                gpu_count=int(entry["gpuCount"]),
                vcpus=int(entry["vcpus"]),
                memory_gib=int(entry["memoryGib"]),
                hourly_usd=Decimal(entry["hourlyUsd"]),
                billing_rule=rules[entry["billingRule"]],
            )
            for entry in document["instanceTypes"]
        )
    )


@cache
def load_catalog() -> Catalog:
    return parse_catalog(json.loads(CATALOG_FILE.read_text()))
