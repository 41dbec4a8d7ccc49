"""What the agent on a machine reports, and the pure rules the service applies to it: whether
the GPUs it found are the ones the catalog promised, and whether a heartbeat is evidence of
activity."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

# Where evidence of activity came from: a client's POST /activity, or a GPU heartbeat.
CLIENT = "client"
GPU = "gpu"


@dataclass(frozen=True)
class AgentPolicy:
    """How the agents on the machines are run: where they call, how often, when a machine
    cut off from the service stops itself, and what counts as a busy GPU."""

    # The service's URL as the agents reach it (deployed: the API's own; local: make run's).
    callback_url: str | None = None
    heartbeat_seconds: int = 60
    idle_gpu_utilization_percent: int = 5
    # None: each instance's idle timeout + DEADMAN_MARGIN.
    deadman_minutes: int | None = None
    ready_timeout_minutes: int = 15
    # "auto": each cloud's own way (docs/agent.md); "exit": the local emulation's runner
    # terminates the machine when its agent exits.
    stop_method: str = "auto"


@dataclass(frozen=True)
class GpuFound:
    """One GPU as the agent's `nvidia-smi` saw it at boot."""

    index: int
    name: str
    memory_total_mib: int | None
    driver_version: str
    ecc_errors: int | None = None


@dataclass(frozen=True)
class GpuReport:
    """The agent's boot report: the GPUs it found, or why it could not look."""

    ok: bool
    gpus: tuple[GpuFound, ...]
    reported_at: datetime
    error: str | None = None


@dataclass(frozen=True)
class GpuSample:
    """One GPU in one heartbeat."""

    index: int
    # None: unknown (nvidia-smi's [N/A], or its process query failed); never evidence.
    utilization_percent: int | None
    memory_used_mib: int | None
    processes: int | None


@dataclass(frozen=True)
class Heartbeat:
    at: datetime
    gpus: tuple[GpuSample, ...]
    healthy: bool = True
    error: str | None = None

    def is_evidence(self, idle_threshold_percent: int) -> bool:
        """Activity: some GPU busier than the threshold, or running a process. A heartbeat
        that says nothing of the GPUs is not evidence (silence never is)."""
        return any(
            (g.utilization_percent or 0) > idle_threshold_percent or (g.processes or 0) > 0
            for g in self.gpus
        )

    @property
    def peak_utilization(self) -> int | None:
        known = [g.utilization_percent for g in self.gpus if g.utilization_percent is not None]
        return max(known, default=None)


def gpu_mismatch(report: GpuReport, model: str, count: int) -> str | None:
    """Why the reported GPUs are not the catalog's `count` x `model`, or None if they are.

    nvidia-smi names a GPU with its maker and form factor ("Tesla T4", "NVIDIA A100-SXM4-40GB",
    "NVIDIA A10G"): the catalog's model must be one of the name's words, so A10 does not
    pass for A100."""
    if not report.ok:
        return f"the agent could not query the GPUs ({report.error or 'no reason given'})"
    word = re.compile(rf"(?:^|[\s-]){re.escape(model)}(?:$|[\s-])", re.IGNORECASE)
    matching = [g for g in report.gpus if word.search(g.name)]
    if len(report.gpus) != count or len(matching) != count:
        found = ", ".join(sorted({g.name for g in report.gpus})) or "none"
        return f"expected {count} x {model}, the machine has {len(report.gpus)} ({found})"
    failing = [g.index for g in report.gpus if g.ecc_errors]
    if failing:
        return f"GPU {', '.join(map(str, failing))} reports uncorrected ECC errors"
    return None


def new_agent_secret() -> tuple[str, str]:
    """A per-instance secret for its agent, and the hash the record keeps of it."""
    secret = secrets.token_urlsafe(32)
    return secret, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    return stored_hash is not None and hmac.compare_digest(hash_secret(secret), stored_hash)
