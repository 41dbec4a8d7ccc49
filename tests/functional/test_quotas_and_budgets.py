"""Quotas and budgets per user: the limits an operator sets, POSTs refused past them with
nothing created, usage released when instances finish, and the monthly budget's warning,
refusal and stop."""

from __future__ import annotations

from decimal import Decimal

import boto3

from chalicelib import bootstrap
from chalicelib.domain.limits import Limits

OPERATOR = "ops:admin"


def set_limits(api, user: str = "alice", **limits):
    return api.call("PUT", f"/api/users/{user}/limits", user=OPERATOR, body=limits)


def limits_of(api, user: str = "alice", caller: str = "alice"):
    return api.call("GET", f"/api/users/{user}/limits", user=caller)


def running_machines() -> int:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    reservations = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    return sum(len(r["Instances"]) for r in reservations)


def budget_warnings(events) -> list[dict]:
    return [e["detail"] for e in events() if e["detail-type"] == "Budget Warning"]


def test_a_user_capped_at_one_instance_is_refused_a_second_and_nothing_is_created(api, aws):
    status, _, _ = set_limits(api, maxLiveInstances=1)
    assert status == 200
    first = api.provision()
    aws.wait_for_workflows()

    status, problem, _ = api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})

    assert (status, problem["error"]) == (403, "quota_exceeded")
    assert problem["limit"] == {"name": "maxLiveInstances", "value": "1", "usage": "1"}
    assert problem["fields"] == [{"field": "maxLiveInstances", "problem": "limit reached: 1 in "
                                  "use", "allowed": "1"}]
    _, page, _ = api.call("GET", "/api/instances")
    assert [i["id"] for i in page["items"]] == [first["id"]]
    assert running_machines() == 1


def test_a_place_a_failed_release_kept_is_given_back_by_the_next_tick(api, aws, faults):
    """The record is finished, but the write giving its usage back is refused (a throttle,
    a missing right): the user is held at the limit until the reaper's tick sees a holder
    whose record is finished and gives its place back."""
    set_limits(api, maxLiveInstances=1)
    first = api.provision()
    aws.wait_for_workflows()
    faults.fail("dynamodb", "UpdateItem", "AccessDeniedException")  # the release's write
    api.call("DELETE", f"/api/instances/{first['id']}")
    aws.wait_for_workflows()
    assert api.get(first["id"])["status"] == "TERMINATED"
    refused = api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})
    assert (refused[0], refused[1]["error"]) == (403, "quota_exceeded")

    report = api.tick()

    assert report["usageRepaired"] == [first["id"]]
    assert limits_of(api)[1]["usage"]["liveInstances"] == 0
    assert api.tick()["usageRepaired"] == []  # once
    api.provision()


def test_a_finished_instance_gives_its_place_back(api, aws):
    set_limits(api, maxLiveInstances=1)
    first = api.provision()
    aws.wait_for_workflows()
    api.call("DELETE", f"/api/instances/{first['id']}")
    aws.wait_for_workflows()

    assert api.get(first["id"])["status"] == "TERMINATED"
    assert limits_of(api)[1]["usage"]["liveInstances"] == 0
    api.provision()  # 202


def test_gpu_and_burn_rate_limits_name_themselves(api, aws):
    set_limits(api, maxLiveGpus=4, maxBurnRateUsdPerHour="4.00")
    api.provision(instanceType="p3.2xlarge")  # 1 GPU, 3.06 USD/h

    gpus = api.call("POST", "/api/instances", body={"instanceType": "g4dn.12xlarge"})[1]
    burn = api.call("POST", "/api/instances", body={"instanceType": "p3.2xlarge"})[1]

    assert gpus["limit"] == {"name": "maxLiveGpus", "value": "4", "usage": "1"}
    assert burn["limit"] == {"name": "maxBurnRateUsdPerHour", "value": "4.00", "usage": "3.06"}


def test_a_request_landing_between_another_ones_check_and_write_cannot_pass_a_limit(
    api, aws
):
    """The last free place taken by a second request at the worst moment (after anything the
    first may have read, just before its write): the first is refused, because the check is
    DynamoDB's, inside the write. A read-then-write would let both through."""
    from chalicelib.domain.errors import QuotaExceededError
    from tests.conftest import START
    from tests.functional.test_cost_report import finished_record

    quotas = bootstrap.container().quotas
    quotas.store.set_overrides("alice", {"max_live_instances": 1})
    g4dn = bootstrap.container().catalog.find("g4dn.xlarge")
    first, second = (finished_record(g4dn, START, START) for _ in range(2))
    held = []

    def second_request_first(model, params, **_) -> None:
        if model.name == "UpdateItem" and not held:
            held.append(second.id)
            quotas.reserve(second)  # lands between the first's check and its write

    quotas.store.client.meta.events.register("before-call", second_request_first)
    try:
        quotas.reserve(first)
    except QuotaExceededError as refused:
        assert refused.extensions["limit"] == {
            "name": "maxLiveInstances", "value": "1", "usage": "1"
        }
    else:
        held.append(first.id)

    usage, holders = quotas.store.usage("alice")
    assert held == [second.id]
    assert (usage.live_instances, holders) == (1, frozenset({second.id}))


def test_limits_show_the_usage_against_each_and_defaults_where_none_is_set(api, aws, clock):
    set_limits(api, maxLiveInstances=3, monthlyBudgetUsd="10")
    api.provision(instanceType="p3.2xlarge")
    aws.wait_for_workflows()
    clock.advance(minutes=30)

    status, body, _ = limits_of(api)

    assert status == 200
    assert body["limits"] == {"maxLiveInstances": 3, "maxLiveGpus": None,
                              "maxBurnRateUsdPerHour": None, "monthlyBudgetUsd": "10",
                              "budgetAction": "warn"}
    assert body["defaulted"] == ["budgetAction", "maxBurnRateUsdPerHour", "maxLiveGpus"]
    assert body["usage"] == {"liveInstances": 1, "liveGpus": 1, "burnRateUsdPerHour": "3.06",
                             "month": "2026-03", "monthToDateUsd": "1.530000",
                             "budgetSpentPercent": "15.3"}


def test_only_operators_set_limits_and_a_user_reads_only_their_own(api, aws):
    assert api.call("PUT", "/api/users/alice/limits", body={"maxLiveInstances": 9})[0] == 403
    assert limits_of(api, user="bob")[0] == 403
    assert limits_of(api, user="bob", caller=OPERATOR)[0] == 200
    status, problem, _ = set_limits(api, budgetAction="explode")
    assert (status, problem["fields"][0]["field"]) == (400, "budgetAction")


def test_a_spent_budget_with_refuse_refuses_new_instances(api, aws, clock):
    set_limits(api, monthlyBudgetUsd="1.00", budgetAction="refuse")
    running = api.provision(instanceType="p3.2xlarge")
    aws.wait_for_workflows()
    clock.advance(minutes=20)  # 1.02 USD at 3.06 USD/h

    status, problem, _ = api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})

    assert (status, problem["error"]) == (403, "budget_exhausted")
    assert problem["limit"] == {"name": "monthlyBudgetUsd", "value": "1.00", "usage": "1.020000"}
    assert api.get(running["id"])["status"] == "READY"  # refuse does not stop
    api.tick()
    assert api.get(running["id"])["status"] == "READY"


def test_a_budget_warning_goes_out_at_80_percent_once_a_month(api, aws, clock, lifecycle_events):
    set_limits(api, monthlyBudgetUsd="1.00")
    api.provision(instanceType="p3.2xlarge")
    aws.wait_for_workflows()

    clock.advance(minutes=15)  # 0.765 USD
    api.tick()
    assert budget_warnings(lifecycle_events) == []
    clock.advance(minutes=1)  # 0.816 USD
    api.tick()
    clock.advance(minutes=5)
    api.tick()

    [warning] = budget_warnings(lifecycle_events)
    assert warning == {"userId": "alice", "month": "2026-03", "monthlyBudgetUsd": "1.00",
                       "spentUsd": "0.816000", "spentPercent": "81.6", "budgetAction": "warn"}


def test_a_spent_budget_with_stop_stops_the_users_live_instances(api, aws, clock):
    set_limits(api, monthlyBudgetUsd="1.00", budgetAction="stop")
    spender = api.provision(instanceType="p3.2xlarge")
    other = api.provision(user="bob", instanceType="p3.2xlarge")
    aws.wait_for_workflows()
    clock.advance(minutes=20)

    report = api.tick()
    aws.wait_for_workflows()

    assert report["stoppedBudgetExhausted"] == [spender["id"]]
    stopped = api.get(spender["id"])
    assert {"status": "STOPPING", "reason": "budget_exhausted"} in [
        {"status": c["status"], "reason": c["reason"]} for c in stopped["statusHistory"]
    ]
    assert stopped["status"] == "TERMINATED"
    assert api.get(other["id"], user="bob")["status"] == "READY"
    assert limits_of(api)[1]["limits"]["budgetAction"] == "stop"


def test_the_deployment_default_applies_to_every_user_without_their_own(api, aws):
    quotas = bootstrap.container().quotas
    quotas.defaults = Limits(max_live_instances=0, monthly_budget=Decimal("5"))

    status, problem, _ = api.call("POST", "/api/instances", body={"instanceType": "g4dn.xlarge"})

    assert (status, problem["limit"]["name"]) == (403, "maxLiveInstances")
    assert limits_of(api)[1]["defaulted"] == [
        "budgetAction", "maxBurnRateUsdPerHour", "maxLiveGpus", "maxLiveInstances",
        "monthlyBudgetUsd",
    ]
