"""AWS EC2 adapter of CloudProvider: launches, inspects and terminates tagged GPU instances."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from chalicelib.providers.base import (
    DEPLOYMENT_TAG,
    MANAGED_TAG,
    RECORD_ID_TAG,
    TASK_ID_TAG,
    USER_ID_TAG,
    CloudCapacityError,
    CloudConfigurationError,
    CloudInstanceView,
    CloudMachine,
    CloudProviderError,
    CloudSnapshot,
    CloudState,
    CloudThrottlingError,
    LaunchRequest,
    as_utc,
)
from chalicelib.settings import Ec2Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType, ResourceTypeType
    from mypy_boto3_ec2.type_defs import (
        BlockDeviceMappingTypeDef,
        EbsBlockDeviceTypeDef,
        FilterTypeDef,
        InstanceNetworkInterfaceSpecificationTypeDef,
        InstanceTypeDef,
        RunInstancesRequestTypeDef,
        TagSpecificationTypeDef,
        TagTypeDef,
    )

__all__ = ["MANAGED_TAG", "RECORD_ID_TAG", "TASK_ID_TAG", "USER_ID_TAG", "Ec2Provider"]

logger = logging.getLogger(__name__)

# States in which an instance still belongs to its record; shutting-down/terminated ones
# are on their way out and must not stop a new launch.
_LIVE_STATES = ["pending", "running", "stopping", "stopped"]
_STATES = {
    "pending": CloudState.PENDING,
    "running": CloudState.RUNNING,
    "stopping": CloudState.STOPPED,
    "stopped": CloudState.STOPPED,
    "shutting-down": CloudState.TERMINATING,
    "terminated": CloudState.TERMINATED,
}
_NOT_FOUND = "InvalidInstanceID.NotFound"
_ONE_SPOILS_THE_BATCH = (_NOT_FOUND, "UnauthorizedOperation")
# TerminateInstances takes up to 1,000 ids and AWS recommends smaller batches; a filter takes
# up to 200 values.
TERMINATE_BATCH = 200
FILTER_VALUES = 200
# "User initiated (2026-03-02 09:00:00 GMT)": the time of a termination asked for by anyone
# (moto writes UTC where EC2 writes GMT).
_TRANSITION_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")
_THROTTLING_CODES = (
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
    "Client.RequestLimitExceeded",
)  # fmt: skip
_CAPACITY_CODES = (
    "InsufficientInstanceCapacity", "InstanceLimitExceeded", "VcpuLimitExceeded",
    "InsufficientCapacity", "MaxSpotInstanceCountExceeded",
)  # fmt: skip
_CONFIGURATION_CODES = (
    "InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidSubnetID.NotFound",
    "InvalidGroup.NotFound", "InvalidKeyPair.NotFound", "InvalidParameterValue",
    "InvalidParameterCombination", "UnauthorizedOperation", "AuthFailure", "Unsupported",
)  # fmt: skip
_ERRORS_BY_CODE: dict[str, type[CloudProviderError]] = {
    **dict.fromkeys(_THROTTLING_CODES, CloudThrottlingError),
    **dict.fromkeys(_CAPACITY_CODES, CloudCapacityError),
    **dict.fromkeys(_CONFIGURATION_CODES, CloudConfigurationError),
}


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn a botocore ClientError into the domain error for its code (never its message)."""
    try:
        yield
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
        # Unreachable or slow: as retryable as a throttle (the workflow's Retry, the next tick).
        raise CloudThrottlingError(
            f"EC2 {action} did not answer: {type(exc).__name__}", cloud_code="Unreachable"
        ) from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code") or "Unknown"
        error_class = _ERRORS_BY_CODE.get(code, CloudProviderError)
        # AWS's own text can name roles, accounts and resources: it goes to the logs only,
        # and the error (which may reach a record's statusReason) carries just the code.
        logger.warning("EC2 %s failed (%s): %s", action, code, error.get("Message"))
        raise error_class(f"EC2 {action} failed ({code})", cloud_code=code) from exc


def _client_token(record_id: str) -> str:
    # EC2 accepts at most 64 ASCII characters; a sha256 hex digest is exactly 64.
    if len(record_id) <= 64 and record_id.isascii():
        return record_id
    return hashlib.sha256(record_id.encode()).hexdigest()[:64]


class Ec2Provider:
    name = "aws"

    def __init__(
        self,
        settings: Ec2Settings,
        client_factory: Callable[[str], EC2Client],
        deployment: str,
        cost_tags: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._client_for = client_factory
        self._deployment = deployment
        self._cost_tags = dict(cost_tags or {})
        # The image's root device name and size, per AMI (one DescribeImages each).
        self._root_devices: dict[str, tuple[str, int | None]] = {}

    def _encrypted_root(self, client: EC2Client) -> BlockDeviceMappingTypeDef:
        """The image's root volume, encrypted (with the deployment's KMS key if it names one)
        and deleted with the instance."""
        ami = str(self._settings.ami_id)
        if ami not in self._root_devices:
            with _translated("DescribeImages"):
                images = client.describe_images(ImageIds=[ami])["Images"]
            if not images:
                raise CloudConfigurationError(
                    f"EC2 image {ami} (EC2_AMI_ID) was not found",
                    cloud_code="InvalidAMIID.NotFound",
                )
            image = images[0]
            device = image.get("RootDeviceName") or "/dev/xvda"
            root = next(
                (m for m in image.get("BlockDeviceMappings", []) if m.get("DeviceName") == device),
                None,
            )
            root_ebs = root.get("Ebs") if root is not None else None
            self._root_devices[ami] = (device, root_ebs.get("VolumeSize") if root_ebs else None)
        device, size = self._root_devices[ami]
        ebs: EbsBlockDeviceTypeDef = {"Encrypted": True, "DeleteOnTermination": True}
        if size:
            ebs["VolumeSize"] = size  # the image's own size: restated, not changed
        if self._settings.kms_key_id:
            ebs["KmsKeyId"] = self._settings.kms_key_id
        return {"DeviceName": device, "Ebs": ebs}

    def launch(self, request: LaunchRequest) -> CloudInstanceView:
        if not self._settings.ami_id:
            raise CloudConfigurationError("EC2_AMI_ID is not set; cannot launch on AWS")
        # The tag lookup makes a retried launch safe even after the ClientToken has expired.
        existing = self.find_for_record(request.record_id, request.region)
        if existing is not None:
            return existing
        tags = {
            # Cost-allocation tags first: the service's own tags cannot be overridden.
            **self._cost_tags,
            MANAGED_TAG: "true",
            DEPLOYMENT_TAG: self._deployment,
            RECORD_ID_TAG: request.record_id,
            USER_ID_TAG: request.user_id,
            "Name": f"instance-provisioner-{request.record_id}",
        }
        if request.task_id:
            tags[TASK_ID_TAG] = request.task_id
        tag_list: list[TagTypeDef] = [{"Key": key, "Value": value} for key, value in tags.items()]
        kinds: tuple[ResourceTypeType, ...] = ("instance", "volume", "network-interface")
        tag_specifications: list[TagSpecificationTypeDef] = [
            {"ResourceType": kind, "Tags": tag_list} for kind in kinds
        ]
        client = self._client_for(request.region)
        interface: InstanceNetworkInterfaceSpecificationTypeDef = {
            "DeviceIndex": 0,
            # Medical workloads: no public address unless the deployment asks for one.
            "AssociatePublicIpAddress": self._settings.public_ip,
            "DeleteOnTermination": True,
        }
        if self._settings.subnet_id:
            interface["SubnetId"] = self._settings.subnet_id
        if self._settings.security_group_ids:
            interface["Groups"] = list(self._settings.security_group_ids)
        params: RunInstancesRequestTypeDef = {
            "ImageId": self._settings.ami_id,
            # The catalog names EC2's own types; EC2 refuses one it does not know.
            "InstanceType": cast("InstanceTypeType", request.instance_type),
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": _client_token(request.record_id),
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            # The agent's dead-man switch powers the OS off: that must end the instance.
            "InstanceInitiatedShutdownBehavior": "terminate",
            "NetworkInterfaces": [interface],
            "BlockDeviceMappings": [self._encrypted_root(client)],
            "TagSpecifications": tag_specifications,
        }
        if request.user_data:
            params["UserData"] = request.user_data  # boto3 base64-encodes it
        if self._settings.key_name:
            params["KeyName"] = self._settings.key_name
        with _translated("RunInstances"):
            instance = client.run_instances(**params)["Instances"][0]
        return self._view(client, instance)

    def describe(self, resource_id: str, region: str) -> CloudInstanceView:
        client = self._client_for(region)
        try:
            with _translated("DescribeInstances"):
                reservations = client.describe_instances(InstanceIds=[resource_id])["Reservations"]
        except CloudProviderError as exc:
            if exc.cloud_code != _NOT_FOUND:
                raise
            reservations = []
        instances = [i for r in reservations for i in r.get("Instances", [])]
        if not instances:
            return CloudInstanceView(resource_id=resource_id, state=CloudState.TERMINATED)
        return self._view(client, instances[0])

    def find_for_record(self, record_id: str, region: str) -> CloudInstanceView | None:
        client = self._client_for(region)
        filters: list[FilterTypeDef] = [
            *self._managed_filters(),
            {"Name": f"tag:{RECORD_ID_TAG}", "Values": [record_id]},
            {"Name": "instance-state-name", "Values": _LIVE_STATES},
        ]
        with _translated("DescribeInstances"):
            reservations = client.describe_instances(Filters=filters)["Reservations"]
        instances = [i for r in reservations for i in r.get("Instances", [])]
        return self._view(client, instances[0]) if instances else None

    def terminate(self, resource_id: str, region: str) -> CloudState:
        return self.terminate_many([resource_id], region)[resource_id]

    def terminate_many(self, resource_ids: Collection[str], region: str) -> dict[str, CloudState]:
        ids = list(dict.fromkeys(resource_ids))
        states: dict[str, CloudState] = {}
        for start in range(0, len(ids), TERMINATE_BATCH):
            states.update(self._terminate_batch(ids[start : start + TERMINATE_BATCH], region))
        return states

    def _terminate_batch(self, ids: list[str], region: str) -> dict[str, CloudState]:
        client = self._client_for(region)
        try:
            with _translated("TerminateInstances"):
                answer = client.terminate_instances(InstanceIds=ids)
        except CloudProviderError as exc:
            if exc.cloud_code not in _ONE_SPOILS_THE_BATCH:
                raise
            if len(ids) == 1:
                if exc.cloud_code == _NOT_FOUND:
                    return {ids[0]: CloudState.TERMINATED}
                raise
            # One unknown id, or one the role may not terminate (a machine without this
            # deployment's tags), fails the whole call and terminates nothing: go one by one,
            # so the others still go and only the refused one keeps failing.
            states: dict[str, CloudState] = {}
            refused: CloudProviderError | None = None
            for resource_id in ids:
                try:
                    states.update(self._terminate_batch([resource_id], region))
                except CloudProviderError as single:
                    refused = single
            if refused is not None and not states:
                raise refused from exc
            return states
        reported = {
            item["InstanceId"]: _STATES.get(item["CurrentState"]["Name"], CloudState.PENDING)
            for item in answer.get("TerminatingInstances", [])
        }
        # An id the answer leaves out was accepted all the same; the next look will tell.
        return {r: reported.get(r, CloudState.TERMINATING) for r in ids}

    def snapshot(
        self, region: str, resource_ids: Collection[str], include_managed: bool = True,
        power_wanted: Collection[str] = (),  # DescribeInstances gives every machine's state
    ) -> CloudSnapshot:
        client = self._client_for(region)
        managed = (
            [self._machine(i) for i in self._describe_all(client, self._managed_filters())]
            if include_managed else []
        )
        by_id = {m.resource_id: m for m in managed}
        unseen = [r for r in dict.fromkeys(resource_ids) if r not in by_id]
        for start in range(0, len(unseen), FILTER_VALUES):
            chunk = unseen[start : start + FILTER_VALUES]
            # A filter, unlike InstanceIds, does not fail the call for an id EC2 has forgotten.
            for instance in self._describe_all(client, [{"Name": "instance-id", "Values": chunk}]):
                machine = self._machine(instance)
                by_id[machine.resource_id] = machine
        return CloudSnapshot(managed=tuple(managed), by_id=by_id)

    def _managed_filters(self) -> list[FilterTypeDef]:
        return [
            {"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]},
            {"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [self._deployment]},
        ]

    @staticmethod
    def _describe_all(
        client: EC2Client, filters: list[FilterTypeDef]
    ) -> Iterator[InstanceTypeDef]:
        with _translated("DescribeInstances"):
            pages = client.get_paginator("describe_instances").paginate(
                Filters=filters, PaginationConfig={"PageSize": 1000}
            )
            for page in pages:
                for reservation in page.get("Reservations", []):
                    yield from reservation.get("Instances", [])

    @staticmethod
    def _machine(instance: InstanceTypeDef) -> CloudMachine:
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        state = _STATES.get(instance["State"]["Name"], CloudState.PENDING)
        transition = None
        found = _TRANSITION_TIME.search(instance.get("StateTransitionReason") or "")
        if found:
            transition = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        return CloudMachine(
            resource_id=instance["InstanceId"],
            state=state,
            record_id=tags.get(RECORD_ID_TAG),
            launched_at=as_utc(instance.get("LaunchTime")),
            gone_at=transition if not state.is_present else None,
            # EC2 bills no compute for a stopping or stopped instance (none is hibernated).
            unbilled_since=transition if state is CloudState.STOPPED else None,
        )

    def _view(self, client: EC2Client, instance: InstanceTypeDef) -> CloudInstanceView:
        state = _STATES.get(instance["State"]["Name"], CloudState.PENDING)
        # Status checks only mean something for a running machine; skip the call otherwise.
        checks_passed = state is CloudState.RUNNING and self._checks_ok(
            client, instance["InstanceId"]
        )
        reason = (instance.get("StateReason") or {}).get("Message")
        return CloudInstanceView(
            resource_id=instance["InstanceId"],
            state=state,
            checks_passed=checks_passed,
            private_ip=instance.get("PrivateIpAddress"),
            public_ip=instance.get("PublicIpAddress"),
            detail={"stateReason": reason} if reason else {},
            launched_at=as_utc(instance.get("LaunchTime")),
        )

    def _checks_ok(self, client: EC2Client, instance_id: str) -> bool:
        try:
            with _translated("DescribeInstanceStatus"):
                statuses = client.describe_instance_status(
                    InstanceIds=[instance_id], IncludeAllInstances=True
                )["InstanceStatuses"]
        except CloudProviderError as exc:
            # The status API lags DescribeInstances; an instance it does not know yet is unchecked.
            if exc.cloud_code != _NOT_FOUND:
                raise
            return False
        return any(
            s.get("InstanceStatus", {}).get("Status") == "ok"
            and s.get("SystemStatus", {}).get("Status") == "ok"
            for s in statuses
        )

