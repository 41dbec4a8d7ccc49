"""Listing, reading and provisioning through the HTTP API."""

from __future__ import annotations


def test_provision_answers_202_with_location_and_the_record(api):
    status, body, headers = api.call(
        "POST", "/api/instances",
        body={"instanceType": "p3.2xlarge", "taskId": "scan-7", "autoTerminateMinutes": 45,
              "metadata": {"study": "ct-42", "priority": 2}},
    )
    assert status == 202
    assert headers["Location"] == f"/api/instances/{body['id']}"
    assert body["status"] == "PROVISIONING"
    assert body["instanceType"] == "p3.2xlarge"
    assert body["gpu"] == {"model": "V100", "count": 1}
    assert body["hourlyRateUsd"] == "3.06"
    assert body["autoTerminateMinutes"] == 45
    assert body["taskId"] == "scan-7"
    assert body["metadata"] == {"study": "ct-42", "priority": 2}
    assert body["provider"] == "aws"
    assert body["region"] == "us-east-1"


def test_list_pages_newest_first_with_an_opaque_cursor(api, aws, clock):
    ids = []
    for _ in range(5):
        ids.append(api.provision()["id"])
        clock.advance(seconds=1)
    aws.wait_for_workflows()

    seen = []
    cursor = None
    pages = 0
    while True:
        path = "/api/instances?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = api.call("GET", path)
        assert status == 200
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert pages >= 3


def stop_taking_its_time(api, faults, instance_id: str) -> None:
    """DELETE an instance whose cloud accepts the stop and takes its time: the record stays
    STOPPING (else the release workflow may finish it before the next read)."""
    machine = api.get(instance_id)["cloudResourceId"]
    faults.answer("ec2", "TerminateInstances", {"TerminatingInstances": [
        {"InstanceId": machine, "CurrentState": {"Code": 32, "Name": "shutting-down"}}
    ]})
    api.call("DELETE", f"/api/instances/{instance_id}")


def test_list_filters_by_status_and_task(api, aws, faults):
    kept = api.provision(taskId="task-a")
    stopped = api.provision(taskId="task-b")
    aws.wait_for_workflows()
    stop_taking_its_time(api, faults, stopped["id"])
    aws.wait_for_workflows()

    _, ready, _ = api.call("GET", "/api/instances?status=READY")
    _, stopping, _ = api.call("GET", "/api/instances?status=STOPPING")
    _, by_task, _ = api.call("GET", "/api/instances?taskId=task-a")

    assert [i["id"] for i in ready["items"]] == [kept["id"]]
    assert [i["id"] for i in stopping["items"]] == [stopped["id"]]
    assert [i["id"] for i in by_task["items"]] == [kept["id"]]


def test_status_filter_fills_a_page_across_non_matching_records(api, aws, clock, faults):
    wanted = api.provision()
    clock.advance(seconds=1)
    for _ in range(4):
        api.provision()
        clock.advance(seconds=1)
    aws.wait_for_workflows()
    stop_taking_its_time(api, faults, wanted["id"])
    aws.wait_for_workflows()

    _, page, _ = api.call("GET", "/api/instances?status=STOPPING&limit=1")

    assert [i["id"] for i in page["items"]] == [wanted["id"]]


def test_empty_listing_has_no_cursor(api):
    status, page, _ = api.call("GET", "/api/instances", user="nobody")
    assert (status, page) == (200, {"items": [], "nextCursor": None})
