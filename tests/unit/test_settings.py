"""A setting the service cannot use stops it with a sentence naming the variable and the value."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.settings import Settings, SettingsError

INTEGERS = [
    "PROVISIONING_LIMIT_MINUTES",
    "CONFIGURING_LIMIT_MINUTES",
    "STOPPING_LIMIT_MINUTES",
    "ORPHAN_GRACE_SECONDS",
    "WORKFLOW_POLL_SECONDS",
    "WORKFLOW_MAX_CHECKS",
    "RELEASE_POLL_SECONDS",
    "RELEASE_MAX_CHECKS",
    "DEFAULT_MAX_LIFETIME_MINUTES",
    "AGENT_HEARTBEAT_SECONDS",
    "IDLE_GPU_UTILIZATION_PERCENT",
    "AGENT_DEADMAN_MINUTES",
    "AGENT_READY_TIMEOUT_MINUTES",
]


def _error(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ)
    return str(raised.value)


@pytest.mark.parametrize("name", INTEGERS)
def test_an_integer_setting_that_is_not_one_is_named_with_its_value(name: str) -> None:
    assert _error({name: "x"}) == f"{name} must be an integer, got 'x'"
    assert _error({name: "1.5"}) == f"{name} must be an integer, got '1.5'"


def test_integer_settings_out_of_their_range_say_the_bound() -> None:
    assert _error({"WORKFLOW_MAX_CHECKS": "0"}) == "WORKFLOW_MAX_CHECKS must be at least 1, got 0"
    assert _error({"IDLE_GPU_UTILIZATION_PERCENT": "101"}) == (
        "IDLE_GPU_UTILIZATION_PERCENT must be at most 100, got 101"
    )
    assert _error({"AGENT_DEADMAN_MINUTES": "0"}) == (
        "AGENT_DEADMAN_MINUTES must be at least 1, got 0"
    )
    assert _error({"ORPHAN_GRACE_SECONDS": "-5"}) == (
        "ORPHAN_GRACE_SECONDS must be at least 0, got -5"
    )


def test_integer_settings_are_read_and_blank_ones_keep_their_default() -> None:
    settings = Settings.from_env(
        {"STOPPING_LIMIT_MINUTES": " 7 ", "WORKFLOW_MAX_CHECKS": "", "AGENT_DEADMAN_MINUTES": " "}
    )
    assert settings.policy.stopping_limit == timedelta(minutes=7)
    assert settings.workflow_max_checks == Settings.workflow_max_checks
    # Blank is unset: the idle timeout's own dead-man time, not a zero-minute switch.
    assert settings.agent.deadman_minutes is None
    assert Settings.from_env({"AGENT_DEADMAN_MINUTES": "30"}).agent.deadman_minutes == 30


@pytest.mark.parametrize("name", ["EC2_PUBLIC_IP", "AZURE_ENCRYPTION_AT_HOST"])
def test_a_flag_that_is_neither_true_nor_false_is_named_with_its_value(name: str) -> None:
    assert _error({name: "Maybe"}) == f"{name} must be true or false, got 'Maybe'"
    assert Settings.from_env({name: " TRUE "}) != Settings.from_env({name: "no"})


def test_a_choice_outside_its_values_lists_them() -> None:
    assert _error({"AGENT_STOP_METHOD": "halt"}) == (
        "AGENT_STOP_METHOD must be one of auto, exit, got 'halt'"
    )


def test_the_agent_callback_url_must_be_an_http_url() -> None:
    for bad in ("api.example.com", "ftp://api.example.com", "https://"):
        assert _error({"AGENT_CALLBACK_URL": bad}) == (
            f"AGENT_CALLBACK_URL must be an http:// or https:// URL, got {bad!r}"
        )
    agent = Settings.from_env({"AGENT_CALLBACK_URL": "https://api.example.com/prod/"}).agent
    assert agent.callback_url == "https://api.example.com/prod"
    assert Settings.from_env({}).agent.callback_url is None


def test_cost_allocation_tags_name_the_variable_and_the_bad_pair() -> None:
    message = _error({"COST_ALLOCATION_TAGS": "project=x,oops"})
    assert message.startswith("COST_ALLOCATION_TAGS must be key=value pairs")
    assert message.endswith("got 'oops'")
    assert _error({"COST_ALLOCATION_TAGS": "provisioner:managed=false"}) == (
        "COST_ALLOCATION_TAGS may not set the service's tag 'provisioner:managed'"
    )
