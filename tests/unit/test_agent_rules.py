"""The pure rules of issue 11: which GPUs pass for the catalog's, which heartbeats are
evidence of activity, the dead-man delay, the agent secret; and the settings behind them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.domain.agent import (
    AgentPolicy,
    GpuFound,
    GpuReport,
    GpuSample,
    Heartbeat,
    gpu_mismatch,
    new_agent_secret,
    secret_matches,
)
from chalicelib.domain.states import InstanceStatus
from chalicelib.services.agent import deadman_for
from chalicelib.settings import Settings, SettingsError
from tests.unit.test_instance import T0, make_instance


def report(*names: str, ecc: int | None = 0, ok: bool = True) -> GpuReport:
    gpus = tuple(GpuFound(i, name, 15360, "535.104.05", ecc) for i, name in enumerate(names))
    return GpuReport(ok=ok, gpus=gpus, reported_at=T0, error=None if ok else "no driver")


@pytest.mark.parametrize(
    ("names", "model", "count"),
    [(("Tesla T4",), "T4", 1), (("NVIDIA A10G",) * 4, "A10G", 4),
     (("NVIDIA A100-SXM4-40GB",) * 8, "A100", 8), (("Tesla V100-SXM2-16GB",), "V100", 1)],
)
def test_the_gpus_nvidia_smi_names_pass_for_the_catalogs_model_and_count(names, model, count):
    assert gpu_mismatch(report(*names), model, count) is None


@pytest.mark.parametrize(
    ("names", "model", "count", "why"),
    [
        (("NVIDIA A10G",), "A100", 1, "expected 1 x A100, the machine has 1 (NVIDIA A10G)"),
        (("NVIDIA A100-SXM4-40GB",), "A10", 1, "expected 1 x A10, the machine has 1"),
        (("Tesla T4",) * 3, "T4", 4, "expected 4 x T4, the machine has 3 (Tesla T4)"),
        ((), "T4", 1, "expected 1 x T4, the machine has 0 (none)"),
    ],
)
def test_other_gpus_or_another_count_do_not_pass(names, model, count, why):
    assert gpu_mismatch(report(*names), model, count).startswith(why)


def test_uncorrected_ecc_errors_fail_the_check_and_unknown_ecc_does_not():
    assert gpu_mismatch(report("Tesla T4", "Tesla T4", ecc=3), "T4", 2) == (
        "GPU 0, 1 reports uncorrected ECC errors"
    )
    assert gpu_mismatch(report("Tesla K80", ecc=None), "K80", 1) is None


def test_a_failed_query_fails_the_check_with_the_agents_reason():
    assert gpu_mismatch(report(ok=False), "T4", 1) == (
        "the agent could not query the GPUs (no driver)"
    )


def beat(*samples: tuple[int | None, int | None]) -> Heartbeat:
    return Heartbeat(T0, tuple(GpuSample(i, u, 0, p) for i, (u, p) in enumerate(samples)))


@pytest.mark.parametrize(
    ("samples", "evidence"),
    [
        (((0, 0), (6, 0)), True),  # one GPU above the threshold
        (((5, 0),), False),  # at the threshold is idle
        (((0, 1),), True),  # a process, however idle
        (((None, None),), False),  # nvidia-smi knew nothing: not evidence
        ((), False),  # silence is never evidence
    ],
)
def test_a_heartbeat_is_evidence_only_of_a_busy_gpu_or_a_gpu_process(samples, evidence):
    assert beat(*samples).is_evidence(idle_threshold_percent=5) is evidence


def test_the_dead_man_delay_is_the_idle_timeout_plus_ten_minutes_unless_set():
    instance = make_instance(InstanceStatus.READY, idle_timeout_minutes=45)

    assert deadman_for(instance, AgentPolicy()) == timedelta(minutes=55)
    assert deadman_for(instance, AgentPolicy(deadman_minutes=20)) == timedelta(minutes=20)


def test_an_agent_secret_is_kept_as_a_hash_that_only_the_secret_matches():
    secret, digest = new_agent_secret()

    assert secret not in digest and len(secret) >= 40
    assert secret_matches(secret, digest)
    assert not secret_matches(secret + "x", digest)
    assert not secret_matches(secret, None)
    assert new_agent_secret()[0] != secret


def test_the_agent_and_launch_settings_are_read_from_the_environment():
    settings = Settings.from_env({
        "AGENT_CALLBACK_URL": "https://api.example/v1/", "AGENT_HEARTBEAT_SECONDS": "30",
        "IDLE_GPU_UTILIZATION_PERCENT": "10", "AGENT_DEADMAN_MINUTES": "90",
        "AGENT_READY_TIMEOUT_MINUTES": "20", "EC2_PUBLIC_IP": "true",
        "EC2_KMS_KEY_ID": "alias/medical",
        "COST_ALLOCATION_TAGS": "project=oncology, cost-center=cc-12",
    })

    assert settings.agent == AgentPolicy(
        callback_url="https://api.example/v1", heartbeat_seconds=30,
        idle_gpu_utilization_percent=10, deadman_minutes=90, ready_timeout_minutes=20,
    )
    assert (settings.ec2.public_ip, settings.ec2.kms_key_id) == (True, "alias/medical")
    assert dict(settings.cost_tags) == {"project": "oncology", "cost-center": "cc-12"}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("COST_ALLOCATION_TAGS", "project", "COST_ALLOCATION_TAGS must be key=value pairs"),
        ("COST_ALLOCATION_TAGS", "provisioner:managed=false",
         "COST_ALLOCATION_TAGS may not set the service's tag 'provisioner:managed'"),
        ("EC2_PUBLIC_IP", "maybe", "EC2_PUBLIC_IP must be true or false, got 'maybe'"),
        ("AGENT_STOP_METHOD", "reboot", "AGENT_STOP_METHOD must be one of auto, exit"),
        ("AGENT_HEARTBEAT_SECONDS", "often", "AGENT_HEARTBEAT_SECONDS"),
    ],
)
def test_a_bad_agent_or_launch_setting_is_refused_naming_the_variable(name, value, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})
