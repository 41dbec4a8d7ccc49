"""In-memory twins of the ports the use cases (chalicelib/services) depend on.

Each twin keeps the contract of its adapter, and tests/contract/ runs the same tests against
both (the twin, and the adapter over moto), so a use-case test on twins proves what it would
prove on the adapters, in milliseconds. The twins add what a test needs to arrange a race or
a failure: hooks run between a read and a write, and failures injected per operation."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from chalicelib.domain.cloud import CloudMachine, CloudSnapshot, CloudState
from chalicelib.domain.errors import ConcurrentUpdateError
from chalicelib.domain.events import Event
from chalicelib.domain.instance import Instance, LifecyclePolicy
from chalicelib.domain.states import InstanceStatus
from chalicelib.persistence.dynamodb import decode_cursor, encode_cursor
from chalicelib.persistence.repository import ListQuery, Page
from chalicelib.providers.base import CloudInstanceView, LaunchRequest


class Failures:
    """Errors a twin raises instead of doing an operation, the next times it is called."""

    def __init__(self) -> None:
        self._pending: dict[str, list[Exception]] = {}

    def fail(self, operation: str, error: Exception, times: int = 1) -> None:
        self._pending.setdefault(operation, []).extend([error] * times)

    def check(self, operation: str) -> None:
        pending = self._pending.get(operation)
        if pending:
            raise pending.pop(0)


# -- the repository ---------------------------------------------------------------------


class InMemoryInstanceRepository:
    """The records in a dict, with the DynamoDB adapter's conditional writes: a record is
    written only if it still has the version and the status it was read with; the write
    bumps the version (as PynamoDB's VersionAttribute does)."""

    def __init__(self, policy: LifecyclePolicy | None = None) -> None:
        self._policy = policy or LifecyclePolicy()
        self._records: dict[str, Instance] = {}
        self.failures = Failures()
        # Called with the record about to be saved, before the condition is checked: what
        # another writer does between this writer's read and its write.
        self.before_save: Callable[[Instance], None] | None = None
        self.saves: list[Instance] = []

    # Arranging and inspecting, for tests -----------------------------------------------

    def stored(self, instance_id: str) -> Instance:
        return copy.deepcopy(self._records[instance_id])

    def write_behind_the_back(self, instance: Instance) -> Instance:
        """Another writer's write (its version bumped), bypassing the conditions."""
        current = self._records[instance.id]
        written = replace(copy.deepcopy(instance), version=(current.version or 0) + 1)
        self._records[instance.id] = written
        return copy.deepcopy(written)

    # The port ---------------------------------------------------------------------------

    def add(self, instance: Instance) -> Instance:
        self.failures.check("add")
        if instance.id in self._records:
            raise ConcurrentUpdateError(f"Instance {instance.id} already exists.")
        stored = replace(copy.deepcopy(instance), version=1)
        self._records[instance.id] = stored
        return copy.deepcopy(stored)

    def get(self, instance_id: str) -> Instance | None:
        self.failures.check("get")
        record = self._records.get(instance_id)
        return copy.deepcopy(record) if record is not None else None

    def save(self, instance: Instance, expected_status: InstanceStatus) -> Instance:
        self.failures.check("save")
        if self.before_save is not None:
            hook, self.before_save = self.before_save, None  # once, as a race happens once
            hook(instance)
        current = self._records.get(instance.id)
        if (
            current is None
            or current.status is not expected_status
            or current.version != instance.version
        ):
            raise ConcurrentUpdateError(
                f"Instance {instance.id} changed while this request was being handled; "
                "read it again and retry."
            )
        stored = replace(copy.deepcopy(instance), version=(instance.version or 0) + 1)
        self._records[instance.id] = stored
        self.saves.append(stored)
        return copy.deepcopy(stored)

    def list(self, query: ListQuery) -> Page:
        self.failures.check("list")
        if query.user_id is not None:
            keys, hash_key = {"id", "user_id", "created_at"}, ("user_id", query.user_id)
        elif query.task_id is not None:
            keys, hash_key = {"id", "task_id", "created_at"}, ("task_id", query.task_id)
        else:
            keys, hash_key = {"id"}, None
        start = decode_cursor(query, keys, hash_key) if query.cursor else None
        matching = [
            r for r in self._records.values()
            if (query.user_id is None or r.user_id == query.user_id)
            and (query.task_id is None or r.task_id == query.task_id)
            and (query.status is None or r.status is query.status)
        ]
        if hash_key is not None:
            matching.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        ids = [r.id for r in matching]
        offset = ids.index(start["id"]["S"]) + 1 if start and start["id"]["S"] in ids else 0
        page = matching[offset : offset + query.limit]
        more = offset + query.limit < len(matching)
        last_key = None
        if more and page:
            last = page[-1]
            last_key = {"id": {"S": last.id}}
            if hash_key is not None:
                last_key[hash_key[0]] = {"S": hash_key[1]}
                last_key["created_at"] = {"S": last.created_at.isoformat()}
        return Page([copy.deepcopy(r) for r in page], encode_cursor(last_key, query))

    def live(self, status: InstanceStatus) -> list[Instance]:
        self.failures.check("live")
        return [copy.deepcopy(r) for r in self._live(status)]

    def due(self, status: InstanceStatus, now: datetime) -> Iterator[Instance]:
        self.failures.check("due")
        for record in self._live(status):
            if record.due_at(self._policy) <= now:
                yield copy.deepcopy(record)

    def all_for_stats(self, user_id: str | None) -> Iterator[Instance]:
        for record in list(self._records.values()):
            if user_id is None or record.user_id == user_id:
                yield copy.deepcopy(record)

    def _live(self, status: InstanceStatus) -> list[Instance]:
        if not status.is_live:
            return []
        found = [r for r in self._records.values() if r.status is status]
        return sorted(found, key=lambda r: r.due_at(self._policy))


# -- a cloud ----------------------------------------------------------------------------


@dataclass
class FakeMachine:
    resource_id: str
    request: LaunchRequest
    launched_at: datetime
    state: CloudState = CloudState.PENDING
    checks_passed: bool = False
    private_ip: str = "10.0.0.4"
    managed: bool = True
    gone_at: datetime | None = None


class FakeCloudProvider:
    """A cloud of one region in a dict. A launch is PENDING until the test says the machine
    runs (`run`) and passed its checks (`pass_checks`); a terminate makes it TERMINATING,
    and `gone` makes it TERMINATED; a machine the cloud never knew reads TERMINATED."""

    def __init__(self, name: str = "aws", clock: Callable[[], datetime] | None = None) -> None:
        self.name = name
        self._clock = clock
        self.machines: dict[str, FakeMachine] = {}
        self.failures = Failures()
        self.calls: list[str] = []
        # Called with each launch request before the machine exists: what happens meanwhile.
        self.on_launch: Callable[[LaunchRequest], None] | None = None

    # Arranging, for tests ---------------------------------------------------------------

    def run(self, resource_id: str, checks_passed: bool = False) -> None:
        machine = self.machines[resource_id]
        machine.state, machine.checks_passed = CloudState.RUNNING, checks_passed

    def pass_checks(self, resource_id: str) -> None:
        self.run(resource_id, checks_passed=True)

    def gone(self, resource_id: str) -> None:
        machine = self.machines[resource_id]
        machine.state = CloudState.TERMINATED
        machine.gone_at = self._now()

    def machine_for(self, record_id: str) -> FakeMachine | None:
        found = [m for m in self.machines.values() if m.request.record_id == record_id]
        return found[-1] if found else None

    # The port ---------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> CloudInstanceView:
        self.calls.append("launch")
        self.failures.check("launch")
        existing = self.find_for_record(request.record_id, request.region)
        if existing is not None:
            return existing
        if self.on_launch is not None:
            hook, self.on_launch = self.on_launch, None
            hook(request)
        resource_id = f"{self.name}-machine-{len(self.machines) + 1}"
        self.machines[resource_id] = FakeMachine(resource_id, request, self._now())
        return self._view(self.machines[resource_id])

    def describe(self, resource_id: str, region: str) -> CloudInstanceView:
        self.calls.append("describe")
        self.failures.check("describe")
        machine = self.machines.get(resource_id)
        if machine is None:
            return CloudInstanceView(resource_id=resource_id, state=CloudState.TERMINATED)
        return self._view(machine)

    def find_for_record(self, record_id: str, region: str) -> CloudInstanceView | None:
        self.calls.append("find_for_record")
        self.failures.check("find_for_record")
        for machine in self.machines.values():
            if (
                machine.managed and machine.request.record_id == record_id
                and machine.state.is_present
            ):
                return self._view(machine)
        return None

    def terminate(self, resource_id: str, region: str) -> CloudState:
        return self.terminate_many([resource_id], region)[resource_id]

    def terminate_many(self, resource_ids: Collection[str], region: str) -> dict[str, CloudState]:
        self.calls.append("terminate")
        self.failures.check("terminate")
        states = {}
        for resource_id in dict.fromkeys(resource_ids):
            machine = self.machines.get(resource_id)
            if machine is None:
                states[resource_id] = CloudState.TERMINATED
                continue
            if machine.state.is_present:
                machine.state = CloudState.TERMINATING
                machine.gone_at = self._now()
            states[resource_id] = machine.state
        return states

    def snapshot(
        self, region: str, resource_ids: Collection[str], include_managed: bool = True,
        power_wanted: Collection[str] = (),  # the twin always knows each machine's state
    ) -> CloudSnapshot:
        self.calls.append("snapshot")
        self.failures.check("snapshot")
        managed = tuple(
            self._machine(m) for m in self.machines.values() if m.managed and include_managed
        )
        by_id = {m.resource_id: m for m in managed}
        for resource_id in resource_ids:
            machine = self.machines.get(resource_id)
            if machine is not None and resource_id not in by_id:
                by_id[resource_id] = self._machine(machine)
        return CloudSnapshot(managed=managed, by_id=by_id)

    def _now(self) -> datetime:
        if self._clock is None:
            raise AssertionError("FakeCloudProvider needs a clock to stamp launches")
        return self._clock()

    @staticmethod
    def _view(machine: FakeMachine) -> CloudInstanceView:
        running = machine.state is CloudState.RUNNING
        return CloudInstanceView(
            resource_id=machine.resource_id,
            state=machine.state,
            checks_passed=running and machine.checks_passed,
            private_ip=machine.private_ip if running else None,
            launched_at=machine.launched_at,
        )

    @staticmethod
    def _machine(machine: FakeMachine) -> CloudMachine:
        return CloudMachine(
            resource_id=machine.resource_id,
            state=machine.state,
            record_id=machine.request.record_id,
            launched_at=machine.launched_at,
            gone_at=None if machine.state.is_present else machine.gone_at,
        )


# -- events and workflows ---------------------------------------------------------------


@dataclass
class RecordingEventPublisher:
    """Keeps what would go on the bus; `failures.fail("publish", ...)` refuses a batch."""

    published: list[Event] = field(default_factory=list)
    failures: Failures = field(default_factory=Failures)

    def publish_many(self, events: Sequence[Event]) -> None:
        self.failures.check("publish")
        self.published.extend(events)

    def detail_types(self) -> list[str]:
        return [event.detail_type for event in self.published]


class ExecutionAlreadyExistsError(Exception):
    """Step Functions refuses a second execution of the same name."""


@dataclass
class FakeWorkflowStarter:
    """Records the executions started; one per name, as Step Functions allows."""

    arn: str = "arn:aws:states:us-east-1:123456789012:stateMachine:lifecycle"
    started: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: Failures = field(default_factory=Failures)

    def execution_id(self, execution_name: str) -> str:
        return self.arn.replace(":stateMachine:", ":execution:") + f":{execution_name}"

    def start(self, execution_name: str, execution_input: dict[str, Any]) -> str:
        self.failures.check("start")
        if execution_name in self.started:
            raise ExecutionAlreadyExistsError(execution_name)
        self.started[execution_name] = execution_input
        return self.execution_id(execution_name)


class InMemoryLeases:
    def __init__(self) -> None:
        self.held: dict[str, tuple[str, datetime]] = {}

    def acquire(self, name: str, holder: str, now: datetime, duration: Any) -> bool:
        current = self.held.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self.held[name] = (holder, now + duration)
        return True

    def release(self, name: str, holder: str) -> None:
        if self.held.get(name, ("", None))[0] == holder:
            del self.held[name]
