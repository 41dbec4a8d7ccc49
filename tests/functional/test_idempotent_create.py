"""POST /api/instances with an Idempotency-Key: a retried request launches nothing twice."""

from __future__ import annotations

import boto3

from chalicelib import bootstrap

BODY = {"instanceType": "g4dn.xlarge", "taskId": "scan-0042"}


def machines() -> list[dict]:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


def post(api, key: str | None, body: dict = BODY, user: str = "alice"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.call("POST", "/api/instances", user=user, body=body, headers=headers)


def test_a_repeated_request_with_one_key_answers_the_same_record_and_starts_nothing(api, aws):
    status, first, first_headers = post(api, "job-7f3a")
    aws.wait_for_workflows()
    again, second, headers = post(api, "job-7f3a")

    assert (status, again) == (202, 202)
    assert second["id"] == first["id"]
    assert second["status"] == "READY"  # the record as it is now, not as it was
    assert headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first_headers
    assert headers["Location"] == f"/api/instances/{first['id']}"
    assert len(api.call("GET", "/api/instances")[1]["items"]) == 1
    assert len(machines()) == 1
    assert [name for name, _ in aws.router.invocations].count("launch_instance") == 1


def test_the_same_key_with_another_body_is_refused_naming_the_key(api, aws):
    post(api, "job-7f3a")

    status, problem, _ = post(api, "job-7f3a", body={**BODY, "taskId": "scan-0043"})

    assert (status, problem["error"]) == (422, "idempotency_key_reused")
    assert "'job-7f3a'" in problem["detail"]
    assert problem["fields"] == [{"field": "Idempotency-Key", "problem": "used for another body"}]
    assert len(api.call("GET", "/api/instances")[1]["items"]) == 1


def test_another_users_key_is_unrelated(api, aws):
    _, alices, _ = post(api, "job-7f3a")
    status, bobs, headers = post(api, "job-7f3a", user="bob")

    assert status == 202
    assert bobs["id"] != alices["id"]
    assert "Idempotent-Replayed" not in headers


def test_a_request_repeated_while_the_first_still_runs_answers_409_and_one_record_is_made(
    api, aws
):
    seen: dict = {}

    def repeat_during_start(model, **_):
        # The first request is between writing its record and starting its workflow.
        if model.name == "StartExecution" and "repeat" not in seen:
            seen["repeat"] = post(api, "job-7f3a")

    container = bootstrap.container()
    build = container._aws_client

    def client(service, region):
        created = build(service, region)
        created.meta.events.register_first("before-parameter-build", repeat_during_start)
        return created

    container._aws_client = client
    status, first, _ = post(api, "job-7f3a")
    aws.wait_for_workflows()

    repeat_status, problem, repeat_headers = seen["repeat"]
    assert status == 202
    assert (repeat_status, problem["error"]) == (409, "idempotency_key_in_use")
    assert repeat_headers["Retry-After"] == "5"
    assert len(api.call("GET", "/api/instances")[1]["items"]) == 1
    assert len(machines()) == 1
    later_status, later, _ = post(api, "job-7f3a")
    assert (later_status, later["id"]) == (202, first["id"])


def test_a_refused_request_does_not_use_up_its_key(api, aws):
    status, _, _ = post(api, "job-7f3a", body={"instanceType": "g4dn.huge"})
    assert status == 400

    status, created, headers = post(api, "job-7f3a", body={"instanceType": "g4dn.huge"})
    assert status == 400  # validated again, not replayed
    status, created, headers = post(api, "job-7f3a", body=BODY)
    assert status == 202


def test_a_malformed_key_is_refused_with_400_naming_the_header(api, aws):
    for key in ("", "x" * 129, "with space", "naïve"):
        status, problem, _ = post(api, key)
        assert (status, problem["error"]) == (400, "invalid_request"), key
        assert problem["fields"] == [{"field": "Idempotency-Key", "problem": "malformed"}]
    assert api.call("GET", "/api/instances")[1]["items"] == []


def test_requests_without_a_key_are_not_deduplicated(api, aws):
    first = post(api, None)[1]
    second = post(api, None)[1]

    assert first["id"] != second["id"]
