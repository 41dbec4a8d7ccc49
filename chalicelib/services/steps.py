"""One function per task of the lifecycle workflow. They raise on failure so the
workflow's Retry and Catch can act; each returns the state the next step receives."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from chalicelib.domain.errors import ConcurrentUpdateError, InstanceNotFoundError
from chalicelib.domain.instance import Instance
from chalicelib.domain.states import InstanceStatus
from chalicelib.providers.base import CloudLaunchFailedError, CloudState, LaunchRequest
from chalicelib.services.lifecycle import Lifecycle

logger = logging.getLogger(__name__)

WorkflowState = dict[str, Any]


class CloudNotReadyError(Exception):
    """The machine did not reach the awaited state within the allowed number of checks."""


class LifecycleSteps:
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.repository = lifecycle.repository
        self.clock = lifecycle.clock

    def launch(self, state: WorkflowState) -> WorkflowState:
        instance = self._load(state)
        if instance.status is not InstanceStatus.PROVISIONING:
            if instance.status.is_terminal:
                # A retry after an earlier attempt launched, lost the race with a stop, and
                # failed to clean up: nothing else looks at finished records, so release by tag.
                self.lifecycle.release_cloud_resources(instance)
            return _stopped(state)
        provider = self.lifecycle.providers.get(instance.provider)
        view = provider.launch(
            LaunchRequest(
                record_id=instance.id,
                user_id=instance.user_id,
                task_id=instance.task_id,
                instance_type=instance.instance_type,
                region=instance.region,
            )
        )
        launched_at = instance.launched_at or self.clock()
        launched = replace(
            instance,
            cloud_resource_id=view.resource_id,
            launched_at=launched_at,
            updated_at=self.clock(),
        )
        try:
            self.repository.save(launched, expected_status=InstanceStatus.PROVISIONING)
        except ConcurrentUpdateError:
            # Stopped (or failed) while we launched: the machine must not outlive its record.
            current = self._load(state)
            if current.status is InstanceStatus.PROVISIONING:
                raise  # an unrelated write raced us; Retry runs this step again (idempotent)
            released = self.lifecycle.release_cloud_resources(
                replace(
                    current,
                    cloud_resource_id=view.resource_id,
                    launched_at=current.launched_at or launched_at,
                )
            )
            if released.status.is_live:
                self.repository.save(released, expected_status=current.status)
            return _stopped(state)
        return {**state, "attempt": 0, "stopped": False}

    def check_running(self, state: WorkflowState) -> WorkflowState:
        instance = self._load(state)
        if instance.status is not InstanceStatus.PROVISIONING:
            return _stopped(state)
        view = self._describe(instance)
        if view.state is CloudState.RUNNING:
            return {
                **state,
                "attempt": 0,
                "running": True,
                "privateIp": view.private_ip,
                "publicIp": view.public_ip,
            }
        if view.failure is not None:
            raise view.failure  # the cloud's own reason (e.g. Azure AllocationFailed)
        if view.state is not CloudState.PENDING:
            raise CloudLaunchFailedError(
                f"The cloud reports the machine {view.state} while starting"
                + (f" ({view.detail})" if view.detail else "")
            )
        return self._next_attempt(state, "running")

    def mark_configuring(self, state: WorkflowState) -> WorkflowState:
        instance = self._load(state)
        if instance.status is not InstanceStatus.PROVISIONING:
            return _stopped(state)
        self.lifecycle.move(
            instance,
            InstanceStatus.CONFIGURING,
            private_ip=state.get("privateIp"),
            public_ip=state.get("publicIp"),
        )
        return {**state, "attempt": 0}

    def check_status(self, state: WorkflowState) -> WorkflowState:
        instance = self._load(state)
        if instance.status is not InstanceStatus.CONFIGURING:
            return _stopped(state)
        view = self._describe(instance)
        if view.failure is not None:
            raise view.failure
        if view.state is not CloudState.RUNNING:
            raise CloudLaunchFailedError(
                f"The cloud reports the machine {view.state} while its status checks ran"
            )
        if view.checks_passed:
            return {**state, "attempt": 0, "checksPassed": True}
        return self._next_attempt(state, "passing its status checks")

    def mark_ready(self, state: WorkflowState) -> WorkflowState:
        instance = self._load(state)
        if instance.status is not InstanceStatus.CONFIGURING:
            return _stopped(state)
        self.lifecycle.move(instance, InstanceStatus.READY)
        return {**state, "ready": True}

    def record_error(self, state: WorkflowState) -> WorkflowState:
        """The Catch target: the record goes to ERROR with the reason, its machine released."""
        instance = self._load(state)
        reason = failure_reason(state.get("error") or {})
        if instance.status in (InstanceStatus.PROVISIONING, InstanceStatus.CONFIGURING):
            self.lifecycle.fail(instance, reason)
        elif instance.status.is_terminal:
            # Finished meanwhile (stopped and confirmed): make sure no machine outlives it.
            self.lifecycle.release_cloud_resources(instance)
        # READY/RUNNING: the workflow failed after its work was done (e.g. MarkReady's Lambda
        # timed out after writing READY); the instance is healthy and stays in service.
        return {**state, "failed": True, "reason": reason}

    # -- helpers --------------------------------------------------------------------

    def _load(self, state: WorkflowState) -> Instance:
        instance = self.repository.get(str(state["instanceId"]))
        if instance is None:
            raise InstanceNotFoundError(f"No instance record {state['instanceId']!r}.")
        return instance

    def _describe(self, instance: Instance) -> Any:
        assert instance.cloud_resource_id is not None
        provider = self.lifecycle.providers.get(instance.provider)
        return provider.describe(instance.cloud_resource_id, instance.region)

    @staticmethod
    def _next_attempt(state: WorkflowState, awaited: str) -> WorkflowState:
        attempt = int(state.get("attempt", 0)) + 1
        if attempt >= int(state["maxChecks"]):
            raise CloudNotReadyError(
                f"The machine was not {awaited} after {attempt} checks."
            )
        return {**state, "attempt": attempt, "running": state.get("running", False)}


def _stopped(state: WorkflowState) -> WorkflowState:
    return {**state, "stopped": True}


def failure_reason(error: dict[str, Any]) -> str:
    """A readable reason from a Step Functions error object {Error, Cause}."""
    name = str(error.get("Error") or "UnknownError")
    cause = error.get("Cause") or ""
    try:
        message = json.loads(cause).get("errorMessage", cause)
    except (ValueError, AttributeError):
        message = cause
    return f"{name}: {message}" if message else name
