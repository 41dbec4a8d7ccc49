"""Going back to the moment the emulation was set up, between tests: one moto emulation
serves a whole test session (creating it, its state machines and tables takes seconds), and
each test starts from the state it had right after start-up.

moto keeps every service's state in plain attributes of its backends. The snapshot copies
them: deeply for the small backends (DynamoDB, Step Functions, EventBridge...), and one level
deep for EC2, whose catalog of images and instance types is large and never changes, while a
test only adds entries (a reservation, its volumes, interfaces and tags) to its collections.
Backends first used after the snapshot are reset to new."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from moto.core.base_backend import BackendDict, BaseBackend

# Services whose backends are copied one level deep: their collections only gain entries
# during a test.
SHALLOW = frozenset({"ec2"})


@dataclass
class _Saved:
    backend: BaseBackend
    state: dict[str, Any]
    shallow: bool

    def restore(self) -> None:
        if not self.shallow:
            self.backend.__dict__.clear()
            self.backend.__dict__.update(copy.deepcopy(self.state))
            return
        current = self.backend.__dict__
        for name, saved in self.state.items():
            value = current.get(name)
            if isinstance(value, dict) and isinstance(saved, dict):
                value.clear()
                value.update(saved)
            elif isinstance(value, list) and isinstance(saved, list):
                value[:] = saved
            elif isinstance(value, set) and isinstance(saved, set):
                value.clear()
                value.update(saved)
            else:
                current[name] = saved


def _backends() -> list[tuple[str, BaseBackend]]:
    """Every backend moto has made so far, with its service (moto.<service>.models)."""
    return [
        (type(backend).__module__.split(".")[1], backend)
        for backends in list(BackendDict._instances)
        for account in list(backends.values())
        for backend in list(account.values())
    ]


def _copy(state: dict[str, Any], shallow: bool) -> dict[str, Any]:
    if not shallow:
        return copy.deepcopy(state)
    return {
        name: copy.copy(value) if isinstance(value, (dict, list, set)) else value
        for name, value in state.items()
    }


@dataclass
class MotoBaseline:
    """The state of every moto backend in use at the moment of `take()`."""

    saved: list[_Saved] = field(default_factory=list)

    @classmethod
    def take(cls) -> MotoBaseline:
        saved = []
        for service, backend in _backends():
            shallow = service in SHALLOW
            saved.append(_Saved(backend, _copy(backend.__dict__, shallow), shallow))
        return cls(saved)

    def restore(self) -> None:
        known = {id(s.backend) for s in self.saved}
        for saved in self.saved:
            saved.restore()
        for _, backend in _backends():
            if id(backend) not in known:
                backend.reset()
