"""One function per task of the lifecycle workflow. They raise on failure so the
workflow's Retry and Catch can act; each returns the state the next step receives."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from chalicelib.domain.agent import AgentPolicy, gpu_mismatch, new_agent_secret
from chalicelib.domain.errors import ConcurrentUpdateError, InstanceNotFoundError
from chalicelib.domain.instance import Instance
from chalicelib.domain.states import InstanceStatus
from chalicelib.providers.base import CloudLaunchFailedError, CloudState, LaunchRequest
from chalicelib.services.agent import deadman_for
from chalicelib.services.agent_bootstrap import agent_config, user_data
from chalicelib.services.lifecycle import Lifecycle

# The agent's stop method for a provider's machines (chalicelib/services/agent_bootstrap.py).
StopMethods = Callable[[str], dict[str, Any]]

logger = logging.getLogger(__name__)

WorkflowState = dict[str, Any]
RELEASE_RACE_ATTEMPTS = 5


class CloudNotReadyError(Exception):
    """The machine did not reach the awaited state within the allowed number of checks."""


class GpuCheckFailedError(Exception):
    """The agent reported GPUs other than the catalog's, or could not query them."""


class AgentTimeoutError(Exception):
    """The agent on the machine did not report within AGENT_READY_TIMEOUT_MINUTES."""


class LifecycleSteps:
    def __init__(self, lifecycle: Lifecycle, agent: AgentPolicy, agent_stop: StopMethods) -> None:
        self.lifecycle = lifecycle
        self.repository = lifecycle.repository
        self.clock = lifecycle.clock
        self.agent = agent
        self.agent_stop = agent_stop

    def launch(self, state: WorkflowState) -> WorkflowState:
        instance = self._load(state)
        if instance.status is not InstanceStatus.PROVISIONING:
            if instance.status.is_terminal:
                # A retry after an earlier attempt launched, lost the race with a stop, and
                # failed to clean up: release by tag (the orphan sweep is the net under this).
                self.lifecycle.release_and_store(instance)
            return _stopped(state)
        provider = self.lifecycle.providers.get(instance.provider)
        view = provider.find_for_record(instance.id, instance.region)
        if view is None:
            # A new machine gets a new agent secret: its hash is stored before the launch,
            # so the machine's agent can always prove itself (a retried launch that finds
            # the machine by its tag keeps the secret it was launched with).
            secret, digest = new_agent_secret()
            instance = self.repository.save(
                replace(instance, agent_secret_hash=digest, updated_at=self.clock()),
                expected_status=InstanceStatus.PROVISIONING,
            )
            config = agent_config(
                instance, secret, self.agent, self.agent_stop(instance.provider),
                int(deadman_for(instance, self.agent).total_seconds()),
            )
            view = provider.launch(
                LaunchRequest(
                    record_id=instance.id,
                    user_id=instance.user_id,
                    task_id=instance.task_id,
                    instance_type=instance.instance_type,
                    region=instance.region,
                    user_data=user_data(config),
                )
            )
        # Billing starts when the cloud accepted the launch, by the cloud's own clock.
        launched_at = instance.launched_at or view.launched_at or self.clock()
        launched = replace(
            instance,
            cloud_resource_id=view.resource_id,
            launched_at=launched_at,
            updated_at=self.clock(),
        )
        try:
            self.repository.save(launched, expected_status=InstanceStatus.PROVISIONING)
        except ConcurrentUpdateError:
            # Stopped (or failed) while we launched: the machine must not outlive its record,
            # and the record is billed for it. The stop's own release may be writing the
            # record at this very moment: read again and retry until this write lands.
            for attempt in range(RELEASE_RACE_ATTEMPTS):
                current = self._load(state)
                if current.status is InstanceStatus.PROVISIONING:
                    raise  # an unrelated write raced us; Retry runs this step again
                try:
                    self.lifecycle.release_and_store(
                        current.with_cloud_launch(view.resource_id, launched_at)
                    )
                    break
                except ConcurrentUpdateError:
                    if attempt == RELEASE_RACE_ATTEMPTS - 1:
                        raise
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

    def check_agent(self, state: WorkflowState) -> WorkflowState:
        """READY needs the agent's word: the GPUs it found must be the catalog's."""
        instance = self._load(state)
        if instance.status is not InstanceStatus.CONFIGURING:
            return _stopped(state)
        report = instance.gpu_report
        if report is not None:
            mismatch = gpu_mismatch(report, instance.gpu_model, instance.gpu_count)
            if mismatch is not None:
                raise GpuCheckFailedError(mismatch[:300])
            return {**state, "attempt": 0, "agentReady": True}
        waited = self.clock() - instance.status_entered_at
        timeout = int(state.get("agentTimeoutSeconds", self.agent.ready_timeout_minutes * 60))
        if waited.total_seconds() >= timeout:
            raise AgentTimeoutError(
                f"the agent on the machine did not report within {timeout // 60} minutes"
            )
        return {**state, "agentReady": False}

    def mark_ready(self, state: WorkflowState) -> WorkflowState:
        instance = self._load(state)
        if instance.status is not InstanceStatus.CONFIGURING:
            return _stopped(state)
        self.lifecycle.move(instance, InstanceStatus.READY)
        return {**state, "ready": True}

    def record_error(self, state: WorkflowState) -> WorkflowState:
        """The Catch target: the record goes to ERROR with the reason, its machine released."""
        instance = self._load(state)
        error = state.get("error") or {}
        # The raw error (the cloud's or DynamoDB's own words) is for operators: logged here
        # and kept in the execution's history, never shown on the record.
        logger.error("lifecycle of %s failed: %s", instance.id, error)
        reason = failure_reason(error)
        if instance.status in (InstanceStatus.PROVISIONING, InstanceStatus.CONFIGURING):
            self.lifecycle.fail(instance, reason)
        elif instance.status.is_terminal:
            # Finished meanwhile (stopped and confirmed): make sure no machine outlives it.
            self.lifecycle.release_and_store(instance)
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


# Why a launch failed, by the error a step raised: a stable code and a sentence of ours.
_REASONS: dict[str, tuple[str, str]] = {
    "CloudCapacityError": ("launch_failed", "the cloud refused the launch"),
    "CloudConfigurationError": (
        "launch_failed", "the cloud refused the launch as this deployment configured it",
    ),
    "CloudThrottlingError": ("launch_failed", "the cloud kept throttling the service"),
    "CloudLaunchFailedError": ("launch_failed", "the machine failed while it started"),
    "CloudProviderError": ("launch_failed", "the cloud refused a request of the launch"),
    "CloudNotReadyError": ("launch_timeout", "the machine did not become ready in time"),
    "States.Timeout": ("launch_timeout", "a step of the launch did not finish in time"),
    "StoreUnavailableError": ("internal_error", "the service could not store the record"),
    "AgentTimeoutError": ("agent_timeout", ""),
    "GpuCheckFailedError": ("gpu_check_failed", ""),
}
# Errors whose message is a sentence of ours, shown as it is.
_OWN_MESSAGES = ("AgentTimeoutError", "GpuCheckFailedError")
_DEFAULT_REASON = ("internal_error", "the service failed while it started the instance")
# The cloud's error code our adapters end their messages with: "... failed (CODE)".
_CLOUD_CODE = re.compile(r"\(([A-Za-z][A-Za-z0-9.]{1,63})\)\s*$")


def failure_reason(error: dict[str, Any]) -> str:
    """A reason a user may read, from a Step Functions error object {Error, Cause}: a stable
    code, a sentence of ours and, for a cloud error, the cloud's error code; never the cause's
    text (AWS and Azure messages carry ARNs, table names and account ids)."""
    name = str(error.get("Error") or "")
    code, sentence = _REASONS.get(name, _DEFAULT_REASON)
    cause = error.get("Cause") or ""
    try:
        message = str(json.loads(cause).get("errorMessage", ""))
    except (ValueError, AttributeError):
        message = ""
    if name in _OWN_MESSAGES:
        sentence = message or name
    elif name.startswith("Cloud") and name in _REASONS:
        found = _CLOUD_CODE.search(message)
        if found:
            sentence += f" ({found[1]})"
    return f"{code}: {sentence}"
