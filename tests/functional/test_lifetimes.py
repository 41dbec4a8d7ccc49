"""Lifetimes: a hard cap on an instance's life whatever its activity, limits a user changes
with PATCH, and the warning five minutes before a stop."""

from __future__ import annotations


def ready_instance(api, aws, **body) -> dict:
    instance = api.provision(**body)
    aws.wait_for_workflows()
    ready = api.get(instance["id"])
    assert ready["status"] == "READY"
    return ready


def heartbeat(api, instance_id: str) -> None:
    status, _, _ = api.call(
        "POST", f"/api/instances/{instance_id}/activity", body={"state": "running"}
    )
    assert status == 200


def patch(api, instance_id: str, user: str = "alice", **body):
    return api.call("PATCH", f"/api/instances/{instance_id}", user=user, body=body)


def expiring(events) -> list[dict]:
    return [e["detail"] for e in events() if e["detail-type"] == "Instance Expiring"]


def test_the_record_shows_its_lifetime_and_both_deadlines(api, aws):
    default = ready_instance(api, aws)
    capped = ready_instance(api, aws, maxLifetimeMinutes=90)

    assert default["maxLifetimeMinutes"] == 720
    assert default["lifetimeDeadline"] == "2026-03-02T21:00:00.000Z"
    assert capped["lifetimeDeadline"] == "2026-03-02T10:30:00.000Z"
    assert capped["idleDeadline"] == "2026-03-02T09:30:00.000Z"


def test_a_busy_instance_is_stopped_at_its_lifetime_whatever_its_activity(api, aws, clock):
    instance = ready_instance(api, aws, maxLifetimeMinutes=60)

    for _ in range(12):  # a task that heartbeats every 5 minutes, for an hour
        clock.advance(minutes=5)
        heartbeat(api, instance["id"])
        report = api.tick()

    assert report["stoppedMaxLifetime"] == [instance["id"]]
    stopped = api.get(instance["id"])
    assert (stopped["status"], stopped["statusReason"]) == ("TERMINATED", "max_lifetime")
    assert stopped["billing"]["endedAt"] == "2026-03-02T10:00:00.000Z"
    assert stopped["costUsd"] == "0.526000"  # one hour at 0.526 USD/h


def test_five_minutes_before_a_lifetime_stop_an_expiring_event_says_which_and_when_once(
    api, aws, clock, lifecycle_events
):
    instance = ready_instance(api, aws, maxLifetimeMinutes=30, autoTerminateMinutes=120)

    clock.advance(minutes=24)
    api.tick()
    assert expiring(lifecycle_events) == []
    clock.advance(minutes=1)
    assert api.tick()["warnedExpiring"] == [instance["id"]]
    clock.advance(minutes=1)
    assert api.tick()["warnedExpiring"] == []  # once per deadline

    [warning] = expiring(lifecycle_events)
    assert warning["id"] == instance["id"]
    assert warning["expiring"] == {"reason": "max_lifetime", "at": "2026-03-02T09:30:00.000Z"}


def test_an_idle_stop_is_announced_too_and_again_after_a_heartbeat_moved_it(
    api, aws, clock, lifecycle_events
):
    instance = ready_instance(api, aws, autoTerminateMinutes=10)

    clock.advance(minutes=6)
    api.tick()
    heartbeat(api, instance["id"])  # the deadline moves: 09:16
    clock.advance(minutes=6)
    api.tick()

    assert [w["expiring"] for w in expiring(lifecycle_events)] == [
        {"reason": "idle_timeout", "at": "2026-03-02T09:10:00.000Z"},
        {"reason": "idle_timeout", "at": "2026-03-02T09:16:00.000Z"},
    ]


def test_patch_changes_the_idle_timeout_of_a_live_instance(api, aws, clock):
    instance = ready_instance(api, aws, autoTerminateMinutes=10)

    status, changed, _ = patch(api, instance["id"], autoTerminateMinutes=60)
    clock.advance(minutes=30)
    api.tick()

    assert status == 200
    assert changed["autoTerminateMinutes"] == 60
    assert changed["idleDeadline"] == "2026-03-02T10:00:00.000Z"
    assert api.get(instance["id"])["status"] == "READY"  # the old 10 minutes no longer apply


def test_a_lifetime_is_never_set_below_the_time_already_lived(api, aws, clock):
    instance = ready_instance(api, aws)
    clock.advance(minutes=45, seconds=10)

    status, problem, _ = patch(api, instance["id"], maxLifetimeMinutes=45)

    assert (status, problem["error"]) == (400, "invalid_request")
    assert problem["fields"] == [{"field": "maxLifetimeMinutes",
                                  "problem": "below the time already lived", "allowed": "46-10080"}]
    status, changed, _ = patch(api, instance["id"], maxLifetimeMinutes=46)
    assert (status, changed["lifetimeDeadline"]) == (200, "2026-03-02T09:46:00.000Z")


def test_patch_of_a_finished_instance_answers_409_and_of_someone_elses_404(api, aws):
    instance = ready_instance(api, aws)
    assert patch(api, instance["id"], user="bob", autoTerminateMinutes=60)[0] == 404
    api.call("DELETE", f"/api/instances/{instance['id']}")
    aws.wait_for_workflows()

    status, problem, _ = patch(api, instance["id"], autoTerminateMinutes=60)

    assert (status, problem["error"]) == (409, "invalid_transition")


def test_limits_out_of_bounds_or_missing_are_refused_naming_the_field(api, aws):
    instance = ready_instance(api, aws)

    assert patch(api, instance["id"])[1]["fields"] == [
        {"field": "(body)", "problem": "no limit to change"}
    ]
    for body, field in (
        ({"autoTerminateMinutes": 4}, "autoTerminateMinutes"),
        ({"maxLifetimeMinutes": 10_081}, "maxLifetimeMinutes"),
        ({"maxLifetimeMinutes": "60"}, "maxLifetimeMinutes"),
        ({"idle": 5}, "idle"),
    ):
        status, problem, _ = patch(api, instance["id"], **body)
        assert (status, problem["fields"][0]["field"]) == (400, field), body
    status, problem, _ = api.call(
        "POST", "/api/instances", body={"instanceType": "g4dn.xlarge", "maxLifetimeMinutes": 9}
    )
    assert (status, problem["fields"][0]["field"]) == (400, "maxLifetimeMinutes")
