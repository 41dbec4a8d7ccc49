"""The catalog of instance types the service can provision, with prices and billing rules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from chalicelib.domain.errors import NoMatchingInstanceTypeError, UnknownInstanceTypeError

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
class Requirement:
    """What a caller needs instead of a named type: a GPU model, how many, and where."""

    gpu_model: str
    gpu_count: int = 1
    provider: str | None = None  # None: any provider


@dataclass(frozen=True)
class Offer:
    """The type picked for a requirement, and every type that was weighed against it."""

    chosen: InstanceType | None  # None: types match, but none is usable here
    candidates: tuple[InstanceType, ...]  # matching and available, cheapest first
    excluded: tuple[tuple[InstanceType, str], ...]  # matching but unavailable, with why


def offer_order(instance_type: InstanceType) -> tuple[Decimal, str, str]:
    # Cheapest first; equal prices fall back to provider then name, so the pick is stable.
    return (instance_type.hourly_usd, instance_type.provider, instance_type.name)


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


    def matching(
        self, provider: str | None = None, gpu_model: str | None = None, min_gpus: int = 0
    ) -> list[InstanceType]:
        """Types by provider, GPU model (case-insensitive) and a minimum GPU count."""
        return [
            t for t in self.instance_types
            if provider in (None, t.provider)
            and (gpu_model is None or t.gpu_model.lower() == gpu_model.lower())
            and t.gpu_count >= min_gpus
        ]

    def cheapest(self, requirement: Requirement, available_providers: dict[str, str]) -> Offer:
        """The cheapest type meeting `requirement`. `available_providers` maps each provider
        to "" when this deployment can use it for the request, or to why it cannot.

        NoMatchingInstanceTypeError when the catalog has no such type at all; an Offer with
        no `chosen` type when it has, but only on providers not usable here."""
        matching = sorted(
            self.matching(requirement.provider, requirement.gpu_model, requirement.gpu_count),
            key=offer_order,
        )
        if not matching:
            raise NoMatchingInstanceTypeError(self._why_nothing_matches(requirement))
        candidates = tuple(t for t in matching if available_providers.get(t.provider) == "")
        excluded = tuple(
            (t, available_providers.get(t.provider) or f"provider {t.provider} is not offered")
            for t in matching if available_providers.get(t.provider) != ""
        )
        return Offer(
            chosen=candidates[0] if candidates else None,
            candidates=candidates,
            excluded=excluded,
        )

    def _why_nothing_matches(self, requirement: Requirement) -> str:
        where = f" on {requirement.provider}" if requirement.provider else ""
        same_model = self.matching(requirement.provider, requirement.gpu_model)
        if same_model:
            most = max(t.gpu_count for t in same_model)
            return (
                f"No instance type{where} has {requirement.gpu_count} {requirement.gpu_model} "
                f"GPUs; the most in one type is {most}."
            )
        models = ", ".join(sorted({t.gpu_model for t in self.matching(requirement.provider)}))
        return (
            f"No instance type{where} has {requirement.gpu_model} GPUs; "
            f"the GPU models{where} are {models}."
        )


def parse_catalog(document: dict[str, Any]) -> Catalog:
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
