"""Ec2Provider against moto's in-process EC2, and against stubbed error answers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import moto.settings
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from chalicelib.providers.aws_ec2 import MANAGED_TAG, RECORD_ID_TAG, Ec2Provider
from chalicelib.providers.base import (
    CloudCapacityError,
    CloudConfigurationError,
    CloudProviderError,
    CloudState,
    CloudThrottlingError,
    LaunchRequest,
)
from chalicelib.settings import Ec2Settings
from local.emulator import EmulatedAws

REGION = "us-east-1"
DEPLOYMENT = "test-deployment"


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def ec2(emulation: tuple[EmulatedAws, Any]) -> Iterator[Any]:
    """EC2 of the session's emulation, without the service around it (reset after)."""
    try:
        yield boto3.client("ec2", region_name=REGION)
    finally:
        emulation[0].reset()


@pytest.fixture
def settings(ec2: Any) -> Ec2Settings:
    # moto ships ~1300 Amazon AMIs; a name filter keeps the answer (and the test) small.
    images = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}]
    )
    ami_id = images["Images"][0]["ImageId"]
    subnet_id = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    return Ec2Settings(ami_id=ami_id, subnet_id=subnet_id)


@pytest.fixture
def provider(ec2: Any, settings: Ec2Settings) -> Ec2Provider:
    return Ec2Provider(settings, lambda region: ec2, DEPLOYMENT)


def launch_request(record_id: str = "rec-1", task_id: str | None = "task-9") -> LaunchRequest:
    return LaunchRequest(
        record_id=record_id,
        user_id="user-7",
        task_id=task_id,
        instance_type="g5.xlarge",
        region=REGION,
    )


def instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


def test_launch_tags_the_instance_with_deployment_record_user_and_task(
    ec2: Any, provider: Ec2Provider
):
    view = provider.launch(launch_request())

    assert view.resource_id.startswith("i-")
    assert view.state in (CloudState.PENDING, CloudState.RUNNING)
    assert tags_of(instance(ec2, view.resource_id)) == {
        MANAGED_TAG: "true",
        "provisioner:deployment": DEPLOYMENT,
        RECORD_ID_TAG: "rec-1",
        "provisioner:user-id": "user-7",
        "provisioner:task-id": "task-9",
        "Name": "instance-provisioner-rec-1",
    }


def test_launch_tags_the_volumes_of_the_instance_too(ec2: Any, provider: Ec2Provider):
    provider.launch(launch_request())

    volumes = ec2.describe_volumes(Filters=[{"Name": f"tag:{RECORD_ID_TAG}", "Values": ["rec-1"]}])
    assert len(volumes["Volumes"]) == 1


def test_launch_without_a_task_leaves_the_task_tag_off(ec2: Any, provider: Ec2Provider):
    view = provider.launch(launch_request(task_id=None))

    assert "provisioner:task-id" not in tags_of(instance(ec2, view.resource_id))


def test_launch_requires_imdsv2_and_sends_the_record_id_as_client_token(
    ec2: Any, provider: Ec2Provider
):
    launched = instance(ec2, provider.launch(launch_request()).resource_id)

    assert launched["MetadataOptions"]["HttpTokens"] == "required"
    assert launched["ClientToken"] == "rec-1"


def test_a_long_record_id_gives_a_64_character_client_token(ec2: Any, provider: Ec2Provider):
    launched = instance(ec2, provider.launch(launch_request(record_id="r" * 100)).resource_id)

    assert len(launched["ClientToken"]) == 64
    assert launched["ClientToken"] != "r" * 64


def test_launching_twice_for_the_same_record_returns_the_same_instance(
    ec2: Any, provider: Ec2Provider
):
    first = provider.launch(launch_request())
    second = provider.launch(launch_request())

    assert second.resource_id == first.resource_id
    tagged = ec2.describe_instances(Filters=[{"Name": f"tag:{RECORD_ID_TAG}", "Values": ["rec-1"]}])
    assert sum(len(r["Instances"]) for r in tagged["Reservations"]) == 1


def test_describe_of_a_running_instance_reports_running_passed_checks_and_a_private_ip_only(
    provider: Ec2Provider,
):
    # moto answers RunInstances with "pending" and every later describe with "running",
    # and reports both status checks "ok" for a running instance.
    launched = provider.launch(launch_request())

    view = provider.describe(launched.resource_id, REGION)

    assert view.state is CloudState.RUNNING
    assert view.checks_passed is True
    assert view.private_ip
    assert view.public_ip is None  # no public address unless the deployment asks


def test_a_deployment_that_asks_for_public_ips_gets_them(ec2: Any, settings: Ec2Settings):
    provider = Ec2Provider(replace(settings, public_ip=True), lambda region: ec2, DEPLOYMENT)

    launched = provider.launch(launch_request())

    assert provider.describe(launched.resource_id, REGION).public_ip


def test_a_launch_has_the_secure_defaults_of_a_medical_workload(ec2: Any, settings: Ec2Settings):
    provider = Ec2Provider(
        replace(settings, kms_key_id="alias/medical"), lambda region: ec2, DEPLOYMENT,
        cost_tags={"project": "oncology", "cost-center": "cc-12"},
    )

    launched = provider.launch(replace(launch_request(), user_data="#cloud-config\n{}"))

    machine = instance(ec2, launched.resource_id)
    assert machine["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 only
    shutdown = ec2.describe_instance_attribute(
        InstanceId=launched.resource_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    [root] = machine["BlockDeviceMappings"]
    volume = ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"][0]
    assert volume["Encrypted"] is True
    assert volume["KmsKeyId"].endswith("alias/medical")
    assert root["Ebs"]["DeleteOnTermination"] is True
    for resource in (machine, volume):
        assert {"project": "oncology", "cost-center": "cc-12"}.items() <= tags_of(
            resource
        ).items()
    data = ec2.describe_instance_attribute(InstanceId=launched.resource_id, Attribute="userData")
    assert base64.b64decode(data["UserData"]["Value"]) == b"#cloud-config\n{}"


def test_cost_allocation_tags_cannot_override_the_services_own_tags(
    ec2: Any, settings: Ec2Settings
):
    provider = Ec2Provider(
        settings, lambda region: ec2, DEPLOYMENT,
        cost_tags={MANAGED_TAG: "false", RECORD_ID_TAG: "someone-else"},
    )

    launched = provider.launch(launch_request())

    tags = tags_of(instance(ec2, launched.resource_id))
    assert (tags[MANAGED_TAG], tags[RECORD_ID_TAG]) == ("true", "rec-1")


def test_describe_of_a_stopped_instance_reports_stopped_without_passed_checks(
    ec2: Any, provider: Ec2Provider
):
    launched = provider.launch(launch_request())
    ec2.stop_instances(InstanceIds=[launched.resource_id])

    view = provider.describe(launched.resource_id, REGION)

    assert view.state is CloudState.STOPPED
    assert view.checks_passed is False


def test_terminate_then_describe_reports_the_instance_terminated(provider: Ec2Provider):
    launched = provider.launch(launch_request())

    provider.terminate(launched.resource_id, REGION)
    view = provider.describe(launched.resource_id, REGION)

    assert view.state in (CloudState.TERMINATING, CloudState.TERMINATED)
    assert view.checks_passed is False


def test_find_for_record_ignores_a_terminated_instance(provider: Ec2Provider):
    launched = provider.launch(launch_request())
    provider.terminate(launched.resource_id, REGION)

    assert provider.find_for_record("rec-1", REGION) is None


def test_find_for_record_returns_the_live_instance_of_the_record(provider: Ec2Provider):
    launched = provider.launch(launch_request())
    provider.launch(launch_request(record_id="rec-2"))

    found = provider.find_for_record("rec-1", REGION)

    assert found is not None
    assert found.resource_id == launched.resource_id


def test_terminating_an_unknown_instance_is_not_an_error(provider: Ec2Provider):
    provider.terminate("i-0123456789abcdef0", REGION)


def test_describe_of_an_unknown_instance_reports_terminated(provider: Ec2Provider):
    view = provider.describe("i-0123456789abcdef0", REGION)

    assert view.state is CloudState.TERMINATED
    assert view.resource_id == "i-0123456789abcdef0"


def test_launch_without_an_ami_setting_raises_a_configuration_error_naming_ec2_ami_id(
    ec2: Any,
):
    provider = Ec2Provider(Ec2Settings(ami_id=None), lambda region: ec2, DEPLOYMENT)

    with pytest.raises(CloudConfigurationError, match="EC2_AMI_ID"):
        provider.launch(launch_request())


def test_launch_with_an_unknown_ami_raises_a_configuration_error_with_the_cloud_code(
    ec2: Any, monkeypatch: pytest.MonkeyPatch
):
    # moto only checks the AMI exists when this setting is on.
    monkeypatch.setattr(moto.settings, "ENABLE_AMI_VALIDATION", True)
    provider = Ec2Provider(Ec2Settings(ami_id="ami-12345678"), lambda region: ec2, DEPLOYMENT)

    with pytest.raises(CloudConfigurationError) as caught:
        provider.launch(launch_request())

    assert caught.value.cloud_code == "InvalidAMIID.NotFound"
    assert str(caught.value) == "EC2 DescribeImages failed (InvalidAMIID.NotFound)"


@pytest.fixture
def stubbed() -> Iterator[tuple[Ec2Provider, Stubber]]:
    client = boto3.client("ec2", region_name=REGION)
    with Stubber(client) as stubber:
        settings = Ec2Settings(ami_id="ami-12345678")
        provider = Ec2Provider(settings, lambda region: client, DEPLOYMENT)
        yield provider, stubber
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("RequestLimitExceeded", CloudThrottlingError),
        ("InsufficientInstanceCapacity", CloudCapacityError),
        ("VcpuLimitExceeded", CloudCapacityError),
        ("UnauthorizedOperation", CloudConfigurationError),
    ],
)
def test_a_refused_run_instances_raises_the_domain_error_of_its_code(
    stubbed: tuple[Ec2Provider, Stubber], code: str, error_class: type[CloudProviderError]
):
    provider, stubber = stubbed
    stubber.add_response("describe_instances", {"Reservations": []})
    stubber.add_response(
        "describe_images",
        {"Images": [{"ImageId": "ami-12345678", "RootDeviceName": "/dev/xvda"}]},
    )
    stubber.add_client_error("run_instances", service_error_code=code, service_message="no")

    with pytest.raises(error_class) as caught:
        provider.launch(launch_request())

    assert caught.value.cloud_code == code
    assert code in str(caught.value)


def test_a_throttled_describe_raises_a_throttling_error(stubbed: tuple[Ec2Provider, Stubber]):
    provider, stubber = stubbed
    stubber.add_client_error(
        "describe_instances", service_error_code="RequestLimitExceeded", http_status_code=503
    )

    with pytest.raises(CloudThrottlingError) as caught:
        provider.describe("i-0123456789abcdef0", REGION)

    assert caught.value.cloud_code == "RequestLimitExceeded"


def test_an_unknown_error_code_raises_the_base_provider_error_keeping_the_code(
    stubbed: tuple[Ec2Provider, Stubber],
):
    provider, stubber = stubbed
    stubber.add_client_error(
        "terminate_instances", service_error_code="InternalError", http_status_code=500
    )

    with pytest.raises(CloudProviderError) as caught:
        provider.terminate("i-0123456789abcdef0", REGION)

    assert type(caught.value) is CloudProviderError
    assert caught.value.cloud_code == "InternalError"
    assert isinstance(caught.value.__cause__, ClientError)


def test_launch_asks_ec2_to_tag_the_instance_its_volumes_and_its_network_interface(
    ec2: Any, provider: Ec2Provider
):
    # moto applies instance and volume tags but not network-interface ones: check the request.
    sent: list[dict] = []
    ec2.meta.events.register(
        "before-parameter-build.ec2.RunInstances", lambda params, **_: sent.append(params)
    )

    provider.launch(launch_request())

    [request] = sent
    kinds = {spec["ResourceType"]: tags_of(spec) for spec in request["TagSpecifications"]}
    assert set(kinds) == {"instance", "volume", "network-interface"}
    assert all(tags["provisioner:deployment"] == DEPLOYMENT for tags in kinds.values())


def test_a_snapshot_lists_only_this_deployments_machines_and_the_ones_asked_about(
    ec2: Any, provider: Ec2Provider, settings: Ec2Settings
):
    mine = provider.launch(launch_request("rec-1")).resource_id
    elsewhere = Ec2Provider(settings, lambda region: ec2, "other-deployment")
    foreign = elsewhere.launch(launch_request("rec-2")).resource_id
    untagged = ec2.run_instances(ImageId=settings.ami_id, MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]

    look = provider.snapshot(REGION, [untagged, "i-0123456789abcdef0"])

    assert [(m.resource_id, m.record_id) for m in look.managed] == [(mine, "rec-1")]
    assert look.managed[0].launched_at is not None
    assert set(look.by_id) == {mine, untagged}  # an id EC2 does not know is simply absent
    assert foreign not in look.by_id


def test_a_snapshot_reports_when_a_machine_was_terminated(ec2: Any, provider: Ec2Provider):
    machine = provider.launch(launch_request()).resource_id
    ec2.terminate_instances(InstanceIds=[machine])

    [gone] = provider.snapshot(REGION, []).managed

    assert gone.state is CloudState.TERMINATED
    assert gone.gone_at is not None  # from "User initiated (... UTC)"


def test_a_snapshot_reports_a_stopped_machine_unbilled_since_its_stop(
    ec2: Any, provider: Ec2Provider
):
    machine = provider.launch(launch_request()).resource_id
    ec2.stop_instances(InstanceIds=[machine])

    [stopped] = provider.snapshot(REGION, []).managed

    assert stopped.state is CloudState.STOPPED
    # EC2 bills no compute from the stop, whose time its transition reason gives.
    assert stopped.unbilled_since is not None
    assert stopped.gone_at is None  # it is still there


def test_many_machines_are_terminated_in_one_call_and_an_unknown_id_spoils_none(
    ec2: Any, provider: Ec2Provider
):
    machines = [provider.launch(launch_request(f"rec-{n}")).resource_id for n in range(3)]
    calls: list[str] = []
    ec2.meta.events.register("before-call", lambda model, **_: calls.append(model.name))

    states = provider.terminate_many([*machines, "i-0123456789abcdef0"], REGION)

    assert {m: states[m] for m in machines} == dict.fromkeys(machines, CloudState.TERMINATING)
    assert states["i-0123456789abcdef0"] is CloudState.TERMINATED
    # One call for all; EC2 refused it for the unknown id, so one more per machine.
    assert calls.count("TerminateInstances") == 1 + 4
    assert all(instance(ec2, m)["State"]["Name"] == "terminated" for m in machines)


def test_a_machine_the_role_may_not_terminate_does_not_hold_back_the_rest_of_its_batch(
    ec2: Any, provider: Ec2Provider
):
    machines = [provider.launch(launch_request(f"rec-{n}")).resource_id for n in range(3)]
    denied = machines[1]

    def deny(params, **_):
        # What IAM does to a whole call when one of its instances lacks the required tags.
        if denied in params.get("InstanceIds", []):
            raise ClientError(
                {"Error": {"Code": "UnauthorizedOperation", "Message": "not authorized"}},
                "TerminateInstances",
            )

    ec2.meta.events.register("before-parameter-build.ec2.TerminateInstances", deny)

    states = provider.terminate_many(machines, REGION)

    assert set(states) == {machines[0], machines[2]}
    assert instance(ec2, machines[0])["State"]["Name"] == "terminated"
    assert instance(ec2, denied)["State"]["Name"] == "running"
