"""The catalog of instance types the service can provision, with prices and billing rules.

Each type has a lifecycle status. A `retired` type (its provider no longer runs it) stays in the
catalog so that old records still show and bill, but is never launched nor picked for a
requirement. A `previous-generation` type still exists but current GPU images no longer run on
it: it is launched only where the deployment allows it (ALLOW_PREVIOUS_GENERATION), with a
warning, and is weighed for a requirement only there."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from chalicelib.domain.errors import (
    InstanceTypeRetiredError,
    NoMatchingInstanceTypeError,
    PreviousGenerationNotAllowedError,
    UnknownInstanceTypeError,
)

CATALOG_FILE = Path(__file__).with_name("instance_types.json")


@dataclass(frozen=True)
class BillingRule:
    """How a provider rounds usage: charged in increments, with a minimum per instance run."""

    name: str
    increment_seconds: int
    minimum_seconds: int
    source: str

    # The rule's one JSON shape: the catalog's types and the stored records carry it, and the
    # API shows it (a catalog file entry, keyed by the name, leaves the name out).
    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "incrementSeconds": self.increment_seconds,
            "minimumSeconds": self.minimum_seconds,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> BillingRule:
        return cls(
            name=document["name"],
            increment_seconds=int(document["incrementSeconds"]),
            minimum_seconds=int(document["minimumSeconds"]),
            source=document.get("source", ""),
        )


class TypeStatus(StrEnum):
    CURRENT = "current"
    PREVIOUS_GENERATION = "previous-generation"  # exists, but current GPU images don't run
    RETIRED = "retired"  # the provider no longer runs it: kept for old records only


@dataclass(frozen=True)
class PriceSource:
    """Where an hourly price was read, for which region, and when."""

    url: str
    region: str
    as_of: date
    note: str = ""


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
    price_source: PriceSource | None = None
    status: TypeStatus = TypeStatus.CURRENT
    status_since: date | None = None  # the retirement date, for a retired type
    replacement: str | None = None  # the type to use instead (retired, previous generation)
    why: str = ""  # why the status, in a sentence

    @property
    def is_retired(self) -> bool:
        return self.status is TypeStatus.RETIRED

    @property
    def is_previous_generation(self) -> bool:
        return self.status is TypeStatus.PREVIOUS_GENERATION


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
    # Whether this deployment launches previous-generation types (ALLOW_PREVIOUS_GENERATION).
    allow_previous_generation: bool = False

    def allowing_previous_generation(self, allowed: bool) -> Catalog:
        return replace(self, allow_previous_generation=allowed)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted({t.provider for t in self.instance_types}))

    def names(self, provider: str | None = None, include_retired: bool = True) -> list[str]:
        return [
            t.name for t in self.instance_types
            if provider in (None, t.provider) and (include_retired or not t.is_retired)
        ]

    def find(self, name: str, provider: str | None = None) -> InstanceType:
        """The type called `name` (for `provider`, when given), whatever its status, or
        UnknownInstanceTypeError listing the types that can be launched."""
        for instance_type in self.instance_types:
            if instance_type.name == name and provider in (None, instance_type.provider):
                return instance_type
        scope = f" for provider {provider}" if provider else ""
        valid = ", ".join(self.names(provider, include_retired=False))
        raise UnknownInstanceTypeError(
            f"Unknown instance type {name!r}{scope}; valid types: {valid}."
        )

    def launchable(self, name: str, provider: str | None = None) -> InstanceType:
        """The type called `name` if this deployment may launch it: InstanceTypeRetiredError
        for a retired type, PreviousGenerationNotAllowedError for a previous-generation one
        where they are not allowed, each naming the replacement."""
        instance_type = self.find(name, provider)
        if instance_type.is_retired:
            when = instance_type.status_since
            since = f" on {when.isoformat()}" if when else ""
            raise InstanceTypeRetiredError(
                f"{instance_type.name} was retired by {instance_type.provider}{since} and can no "
                f"longer be launched; use {instance_type.replacement} instead.",
                replacement=instance_type.replacement,
            )
        if instance_type.is_previous_generation and not self.allow_previous_generation:
            raise PreviousGenerationNotAllowedError(
                f"{instance_type.name} is a previous-generation type: {instance_type.why} This "
                f"deployment does not launch previous-generation types "
                f"(ALLOW_PREVIOUS_GENERATION); use {instance_type.replacement} instead.",
                replacement=instance_type.replacement,
            )
        return instance_type

    def warnings_for(self, instance_type: InstanceType) -> tuple[str, ...]:
        """What a caller launching `instance_type` should be told (a previous generation)."""
        if instance_type.is_previous_generation:
            return (
                f"{instance_type.name} is a previous-generation type: {instance_type.why} "
                f"Consider {instance_type.replacement}.",
            )
        return ()

    def matching(
        self, provider: str | None = None, gpu_model: str | None = None, min_gpus: int = 0,
        include_retired: bool = False,
    ) -> list[InstanceType]:
        """Types by provider, GPU model (case-insensitive) and a minimum GPU count; retired
        types only when asked for."""
        return [
            t for t in self.instance_types
            if provider in (None, t.provider)
            and (gpu_model is None or t.gpu_model.lower() == gpu_model.lower())
            and t.gpu_count >= min_gpus
            and (include_retired or not t.is_retired)
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
        reasons = {t.name: self._why_unusable(t, available_providers) for t in matching}
        candidates = tuple(t for t in matching if not reasons[t.name])
        excluded = tuple((t, reasons[t.name]) for t in matching if reasons[t.name])
        return Offer(
            chosen=candidates[0] if candidates else None,
            candidates=candidates,
            excluded=excluded,
        )

    def _why_unusable(
        self, instance_type: InstanceType, available_providers: dict[str, str]
    ) -> str:
        """An empty string when the type can be launched here, or why not."""
        if instance_type.is_previous_generation and not self.allow_previous_generation:
            return "previous-generation types are not launched here (ALLOW_PREVIOUS_GENERATION)"
        reason = available_providers.get(instance_type.provider)
        if reason is None:
            return f"provider {instance_type.provider} is not offered"
        return reason

    def _why_nothing_matches(self, requirement: Requirement) -> str:
        where = f" on {requirement.provider}" if requirement.provider else ""
        retired = self.matching(
            requirement.provider, requirement.gpu_model, requirement.gpu_count,
            include_retired=True,
        )
        if retired:
            names = ", ".join(t.name for t in retired)
            replacements = ", ".join(dict.fromkeys(str(t.replacement) for t in retired))
            return (
                f"The only instance types{where} with {requirement.gpu_count} "
                f"{requirement.gpu_model} GPUs ({names}) are retired; their replacements are "
                f"{replacements}."
            )
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
    sources = {
        name: PriceSource(
            url=source["url"],
            region=source["region"],
            as_of=date.fromisoformat(source["asOf"]),
            note=source.get("note", ""),
        )
        for name, source in document.get("priceSources", {}).items()
    }
    rules = {
        name: BillingRule.from_json({**rule, "name": name})
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
                price_source=sources[entry["priceSource"]] if "priceSource" in entry else None,
                status=TypeStatus(entry.get("status", TypeStatus.CURRENT)),
                status_since=(
                    date.fromisoformat(entry["statusSince"]) if "statusSince" in entry else None
                ),
                replacement=entry.get("replacement"),
                why=entry.get("why", ""),
            )
            for entry in document["instanceTypes"]
        )
    )


@cache
def load_catalog() -> Catalog:
    return parse_catalog(json.loads(CATALOG_FILE.read_text()))
