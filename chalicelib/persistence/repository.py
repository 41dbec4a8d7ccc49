"""The repository port: how services store and find instance records, whatever the store."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from chalicelib.domain.instance import Instance
from chalicelib.domain.states import InstanceStatus


@dataclass(frozen=True)
class Page:
    items: list[Instance]
    next_cursor: str | None


@dataclass(frozen=True)
class ListQuery:
    user_id: str | None  # None: every user's instances (operators only)
    status: InstanceStatus | None = None
    task_id: str | None = None
    limit: int = 50
    cursor: str | None = None


class InstanceRepository(Protocol):
    def add(self, instance: Instance) -> Instance:
        """Store a new record; refuses to overwrite one with the same id."""
        ...

    def get(self, instance_id: str) -> Instance | None: ...

    def save(self, instance: Instance, expected_status: InstanceStatus) -> Instance:
        """Write `instance` only if the stored record still has its version and
        `expected_status`; raises ConcurrentUpdateError otherwise. Returns the stored copy."""
        ...

    def list(self, query: ListQuery) -> Page: ...

    def live(self, status: InstanceStatus) -> Iterable[Instance]:
        """Every record currently in the live `status` (an index query, never a scan)."""
        ...

    def due(self, status: InstanceStatus, now: datetime) -> Iterator[Instance]:
        """Records in the live `status` whose reaper deadline is at or before `now`."""
        ...

    def all_for_stats(self, user_id: str | None) -> Iterator[Instance]: ...

    def get_many(self, instance_ids: frozenset[str]) -> builtins.list[Instance]:
        """The records of these ids (point reads); ids with no record are left out."""
        ...

    def billed_between(
        self, start: datetime, end: datetime, user_id: str | None
    ) -> Iterator[Instance]:
        """At least every record (of `user_id`, or everyone's) that billed inside
        [start, end), read through an index on time: never the whole history."""
        ...
