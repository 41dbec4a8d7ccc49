"""Which cloud providers this deployment can use, built on first use."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from chalicelib.domain.errors import ProviderUnavailableError
from chalicelib.providers.base import CloudProvider


class ProviderRegistry:
    def __init__(
        self,
        factories: Mapping[str, Callable[[], CloudProvider]],
        regions: Mapping[str, str],
        missing_settings: Mapping[str, list[str]],
    ) -> None:
        self._factories = factories
        self._regions = regions
        self._missing = missing_settings
        self._built: dict[str, CloudProvider] = {}

    def get(self, name: str) -> CloudProvider:
        if name not in self._built:
            missing = self._missing.get(name, [])
            if name not in self._factories or missing:
                detail = f"; missing settings: {', '.join(missing)}" if missing else ""
                raise ProviderUnavailableError(
                    f"Provider {name!r} is not configured in this deployment{detail}."
                )
            self._built[name] = self._factories[name]()
        return self._built[name]

    def available(self) -> set[str]:
        """The providers this deployment is configured to use."""
        return {name for name in self._factories if not self._missing.get(name)}

    def region_for(self, name: str) -> str:
        return self._regions[name]
