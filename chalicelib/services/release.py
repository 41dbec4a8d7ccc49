"""The release workflow's step: a stopped instance's machine is terminated at once and the
record finished when the cloud confirms, by the same decisions and writes as the reaper's
tick (chalicelib/domain/reconcile.py, chalicelib/services/reconciler.py), for one record."""

from __future__ import annotations

import logging
from typing import TypedDict

from chalicelib.domain.cloud import CloudMachine, CloudSnapshot
from chalicelib.domain.errors import InstanceNotFoundError
from chalicelib.domain.instance import Instance, LifecyclePolicy
from chalicelib.domain.reconcile import Plan, decide
from chalicelib.services.lifecycle import Lifecycle
from chalicelib.services.reconciler import Reconciler

logger = logging.getLogger(__name__)


class ReleaseState(TypedDict, total=False):
    """The release workflow's state: its input, and what each check adds."""

    instanceId: str
    pollSeconds: int
    maxChecks: int
    attempt: int
    released: bool  # the record is finished
    handedToReaper: bool  # checks used up: the reaper's tick carries on


def release_execution_name(instance_id: str) -> str:
    """One release execution per record (a record enters STOPPING once)."""
    return f"{instance_id}-release"


class ReleaseSteps:
    def __init__(self, lifecycle: Lifecycle, policy: LifecyclePolicy) -> None:
        self.lifecycle = lifecycle
        self.repository = lifecycle.repository
        self.clock = lifecycle.clock
        self.policy = policy
        self.reconciler = Reconciler(lifecycle, policy)

    def release(self, state: ReleaseState) -> ReleaseState:
        instance = self._load(state)
        if instance.status.is_live:
            now = self.clock()
            decision = decide(instance, self._look(instance), now, self.policy)
            if decision is not None:
                self.reconciler.apply(Plan(decisions=[decision]), now)
            instance = self._load(state)
        attempt = int(state.get("attempt", 0)) + 1
        released = instance.status.is_terminal
        handed_over = not released and attempt >= int(state.get("maxChecks", 1))
        if handed_over:
            logger.warning(
                "%s is still %s after %d checks; the reaper's tick carries on",
                instance.id, instance.status, attempt,
            )
        # Both flags always set: the workflow's Choice reads them without IsPresent.
        return {**state, "attempt": attempt, "released": released, "handedToReaper": handed_over}

    def _look(self, instance: Instance) -> CloudSnapshot:
        """The cloud's word on this record's machine alone (no listing of the fleet)."""
        provider = self.lifecycle.providers.get(instance.provider)
        if instance.cloud_resource_id is not None:
            return provider.snapshot(
                instance.region, [instance.cloud_resource_id], include_managed=False
            )
        found = provider.find_for_record(instance.id, instance.region)
        if found is None:
            return CloudSnapshot(managed=(), by_id={})
        machine = CloudMachine(
            resource_id=found.resource_id, state=found.state, record_id=instance.id,
            launched_at=found.launched_at,
        )
        return CloudSnapshot(managed=(machine,), by_id={machine.resource_id: machine})

    def _load(self, state: ReleaseState) -> Instance:
        instance = self.repository.get(str(state["instanceId"]))
        if instance is None:
            raise InstanceNotFoundError(f"No instance record {state['instanceId']!r}.")
        return instance
