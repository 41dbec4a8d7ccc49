def test_provisioned_instance_reaches_ready(api, aws):
    instance = api.provision()
    aws.wait_for_workflows()
    status, body, _ = api.call("GET", f"/api/instances/{instance['id']}")
    assert status == 200
    assert body["status"] == "READY", body
