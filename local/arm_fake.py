"""A fake of the few Azure Resource Manager and Entra ID endpoints the Azure provider calls,
served over HTTPS on 127.0.0.1 so the real azure-mgmt-* clients, credential, retry policy and
pollers run against it in the tests and in `make run`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import secrets
import ssl
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

COMPUTE = "Microsoft.Compute"
NETWORK = "Microsoft.Network"
# Seconds the fake asks a poller to wait between two status reads, as ARM does; the provider
# never waits on it (it does not poll), and tests that drive a poller record the wait.
LRO_RETRY_AFTER = "10"
# Sizes Azure retired (NC and NV v1 on 2023-09-06): a VM of one is refused like a size the
# location no longer offers.
RETIRED_SIZES = frozenset({
    "Standard_NC6", "Standard_NC12", "Standard_NC24", "Standard_NC24r",
    "Standard_NV6", "Standard_NV12", "Standard_NV24",
})
_GROUP = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers"
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern + r"/?$", re.IGNORECASE))
    for name, pattern in (
        ("openid", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration"),
        ("token", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token"),
        ("networkInterfaces", _GROUP + r"/Microsoft\.Network/networkInterfaces/(?P<name>[^/]+)"),
        (
            "instanceView",
            _GROUP + r"/Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)/instanceView",
        ),
        ("virtualMachines", _GROUP + r"/Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)"),
        ("virtualMachineList", _GROUP + r"/Microsoft\.Compute/virtualMachines"),
        (
            "operation",
            r"/subscriptions/(?P<sub>[^/]+)/providers/(?P<namespace>Microsoft\.\w+)/locations/"
            r"(?P<location>[^/]+)/(?P<kind>operations|operationResults)/(?P<op>[^/]+)",
        ),
    )
)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": {"code": code, "message": message}}, headers)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body) if body is not None else b"",
        status=status,
        headers={"x-ms-request-id": str(uuid.uuid4()), **(headers or {})},
        content_type="application/json; charset=utf-8",
    )


@dataclass
class Fault:
    """One answer the fake gives instead of doing the operation (ARM's own error shape)."""

    status: int
    code: str
    message: str
    retry_after: int | None = None


@dataclass
class _Vm:
    key: tuple[str, str]
    resource_id: str
    name: str
    location: str
    tags: dict[str, str]
    properties: dict[str, Any]
    vm_id: str
    created_at: str
    failure: tuple[str, str] | None
    reads: int = 0
    deleting: bool = False
    delete_reads: int = 0
    identity: dict[str, Any] | None = None  # the managed identities assigned to the VM
    powered_off: bool = False  # its OS shut down: stopped, still allocated (and billed)


@dataclass
class _Nic:
    key: tuple[str, str]
    resource_id: str
    name: str
    location: str
    tags: dict[str, str]
    ip_configuration: dict[str, Any]
    private_ip: str
    updating_reads: int
    reads: int = 0
    attached_to: str | None = None


@dataclass
class _Operation:
    namespace: str
    kind: str  # "create" or "delete"
    resource: tuple[str, str]  # the key of the VM or NIC


@dataclass
class ArmFake:
    """The resources of one subscription and resource group, and the tenant that signs in to it.

    Time advances per request, never by the clock: a VM is `Creating` for `creating_reads` reads
    (a GET of the VM, of its instance view or of its operation), then running with its VM agent
    not ready for `agent_reads` reads, then ready; a deleted VM answers `Deleting` for
    `deleting_reads` reads, then 404."""

    subscription_id: str = "00000000-0000-0000-0000-0000000000a2"
    resource_group: str = "provisioner-local"
    location: str = "eastus"
    tenant_id: str = "00000000-0000-0000-0000-00000000e1d0"
    client_id: str = "00000000-0000-0000-0000-0000000c11e7"
    client_secret: str = field(default_factory=lambda: "local-" + secrets.token_urlsafe(16))
    creating_reads: int = 1
    agent_reads: int = 1
    deleting_reads: int = 1
    nic_updating_reads: int = 0
    base_url: str = "https://127.0.0.1"
    calls: list[str] = field(default_factory=list)
    # The time a VM's creation is stamped with (timeCreated); tests share theirs with the
    # service so that billing from the cloud's launch time follows their clock.
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        self.subnet_id = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{NETWORK}/virtualNetworks/provisioner-vnet/subnets/gpu"
        )
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Back to an empty resource group with the default pace, no faults and no token
        issued (between tests); the tenant and its secret stay."""
        with self._lock:
            self._tokens: set[str] = set()
            for name in ("creating_reads", "agent_reads", "deleting_reads", "nic_updating_reads"):
                setattr(self, name, ArmFake.__dataclass_fields__[name].default)
            self.calls.clear()
            self.reject_credentials = False
            self._faults: dict[tuple[str, str], list[Fault]] = {}
            self._provisioning_failures: list[tuple[str, str]] = []
            self._vms: dict[tuple[str, str], _Vm] = {}
            self._nics: dict[tuple[str, str], _Nic] = {}
            self._operations: dict[str, _Operation] = {}
            self._addresses = ipaddress.ip_network("10.0.0.0/24").hosts()
            for _ in range(3):  # Azure keeps the first addresses of a subnet for itself
                next(self._addresses)

    # -- what tests arrange and inspect ---------------------------------------------------

    def fail_next(
        self, method: str, kind: str, status: int, code: str, message: str | None = None,
        retry_after: int | None = None, times: int = 1,
    ) -> None:
        """Answer the next `times` `method` requests on `kind` (networkInterfaces,
        virtualMachines, instanceView, token) with this error instead of doing them."""
        fault = Fault(status, code, message or f"Injected {code}.", retry_after)
        with self._lock:
            self._faults.setdefault((method.upper(), kind), []).extend([fault] * times)

    def fail_next_provisioning(self, code: str, message: str) -> None:
        """The next VM created is accepted (201), then its provisioning fails with `code`."""
        with self._lock:
            self._provisioning_failures.append((code, message))

    def shut_down_from_inside(self, name: str) -> None:
        """The VM's OS powers off (`shutdown -h now`): no ARM call does it, and Azure then
        reports it stopped but still allocated, billed for compute until deleted."""
        with self._lock:
            vm = self._vms.get((self.resource_group.lower(), name.lower()))
            if vm is not None:  # a VM already deleted has no OS to shut down
                vm.powered_off = True

    def vm_names(self) -> list[str]:
        with self._lock:
            return sorted(vm.name for vm in self._vms.values())

    def nic_names(self) -> list[str]:
        with self._lock:
            return sorted(nic.name for nic in self._nics.values())

    def nic_model(self, name: str) -> dict[str, Any] | None:
        """The network interface as ARM stores it, or None."""
        with self._lock:
            nic = self._nics.get((self.resource_group.lower(), name.lower()))
            return self._nic_body(nic) if nic else None

    def vm_model(self, name: str) -> dict[str, Any] | None:
        """The VM as ARM stores it (without advancing time), or None."""
        with self._lock:
            vm = self._vms.get((self.resource_group.lower(), name.lower()))
            return self._vm_body(vm, instance_view=False) if vm else None

    # -- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            response = self._dispatch(request)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        route = next(
            ((name, found) for name, pattern in _ROUTES if (found := pattern.match(request.path))),
            None,
        )
        if route is None:
            return _error(404, "NotFound", f"No fake ARM route for {request.path}.")
        name, match = route
        params = match.groupdict()
        self.calls.append(f"{request.method} {name} {params.get('name') or params.get('op', '')}")
        if name == "openid":
            return self._openid(params["tenant"])
        if name == "token":
            return self._token(request, params["tenant"])
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if "api-version" not in request.args:
            return _error(400, "MissingApiVersionParameter", "The api-version query parameter "
                          "(?api-version=) is required for all requests.")
        if params["sub"].lower() != self.subscription_id.lower():
            return _error(404, "SubscriptionNotFound",
                          f"The subscription '{params['sub']}' could not be found.")
        fault = self._take_fault(request.method, name)
        if fault is not None:
            retry_after = fault.retry_after
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return _error(fault.status, fault.code, fault.message, headers)
        if name == "operation":
            return self._operation(request, params)
        if params["rg"].lower() != self.resource_group.lower():
            return _error(404, "ResourceGroupNotFound",
                          f"Resource group '{params['rg']}' could not be found.")
        if name == "virtualMachineList":
            return self._list_virtualMachines(request)
        key = (params["rg"].lower(), params["name"].lower())
        handler = getattr(self, f"_{request.method.lower()}_{name}", None)
        if handler is None:
            return _error(405, "MethodNotAllowed", f"{request.method} is not faked on {name}.")
        return handler(request, key, params)

    def _take_fault(self, method: str, kind: str) -> Fault | None:
        pending = self._faults.get((method.upper(), kind))
        return pending.pop(0) if pending else None

    # -- Entra ID ---------------------------------------------------------------------------

    def _openid(self, tenant: str) -> Response:
        root = f"{self.base_url}/{tenant}"
        return _json(200, {
            "issuer": f"{root}/v2.0",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "tenant_region_scope": "NA",
        })

    def _token(self, request: Request, tenant: str) -> Response:
        fault = self._take_fault("POST", "token")
        form = request.form
        if (
            fault is not None or self.reject_credentials or tenant != self.tenant_id
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return _json(401, {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the "
                "secret being sent in the request is the client secret value, not the client "
                "secret ID.",
                "error_codes": [7000215],
                "timestamp": _now(),
                "trace_id": str(uuid.uuid4()),
                "correlation_id": str(uuid.uuid4()),
            })
        token = "fake-arm-token-" + secrets.token_urlsafe(24)
        self._tokens.add(token)
        return _json(200, {
            "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
            "access_token": token,
        })

    def _authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return _error(401, "AuthenticationFailed",
                          "Authentication failed. The 'Authorization' header is missing.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token not in self._tokens:
            return _error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        return None

    # -- operations (Azure-AsyncOperation and Location) ------------------------------------

    def _start_operation(self, namespace: str, kind: str, key: tuple[str, str],
                         location_header: bool) -> dict[str, str]:
        """Record a long-running operation; the headers ARM answers its request with."""
        op_id = str(uuid.uuid4())
        self._operations[op_id] = _Operation(namespace, kind, key)
        root = (f"{self.base_url}/subscriptions/{self.subscription_id}/providers/{namespace}"
                f"/locations/{self.location}")
        api = "2026-04-01" if namespace == COMPUTE else "2026-03-01"
        headers = {
            "Azure-AsyncOperation": f"{root}/operations/{op_id}?api-version={api}",
            "Retry-After": LRO_RETRY_AFTER,
        }
        if location_header:
            headers["Location"] = f"{root}/operationResults/{op_id}?api-version={api}"
        return headers

    def _operation(self, request: Request, params: dict[str, str]) -> Response:
        operation = self._operations.get(params["op"])
        if operation is None:
            return _error(404, "NotFound", f"Operation {params['op']} was not found.")
        status, error = self._operation_status(operation)
        if params["kind"] == "operations":
            body: dict[str, Any] = {"name": params["op"], "status": status, "startTime": _now()}
            if status != "InProgress":
                body["endTime"] = _now()
            if error:
                body["error"] = {"code": error[0], "message": error[1]}
            return _json(200, body)
        if status == "InProgress":
            return _json(202, None, {"Location": f"{self.base_url}{request.full_path}",
                                     "Retry-After": LRO_RETRY_AFTER})
        if operation.kind == "delete" or status == "Failed":
            return _json(204, None)
        vm = self._vms.get(operation.resource)
        return _json(200, self._vm_body(vm, instance_view=False) if vm else None)

    def _operation_status(self, operation: _Operation) -> tuple[str, tuple[str, str] | None]:
        if operation.namespace == NETWORK:
            nic = self._nics.get(operation.resource)
            if operation.kind == "delete":
                return ("Succeeded" if nic is None else "InProgress"), None
            if nic is not None:
                nic.reads += 1
            return ("Succeeded" if nic is None or self._nic_state(nic) == "Succeeded"
                    else "InProgress"), None
        vm = self._advance(operation.resource)
        if operation.kind == "delete":
            return ("Succeeded" if vm is None else "InProgress"), None
        if vm is None:
            return "Canceled", ("OperationCanceled", "The VM was deleted while it was created.")
        state = self._vm_state(vm)
        if state == "Failed":
            return "Failed", vm.failure
        return ("InProgress" if state == "Creating" else "Succeeded"), None

    # -- network interfaces -----------------------------------------------------------------

    def _nic_state(self, nic: _Nic) -> str:
        return "Updating" if nic.reads < nic.updating_reads else "Succeeded"

    def _nic_body(self, nic: _Nic) -> dict[str, Any]:
        config = nic.ip_configuration
        properties: dict[str, Any] = {
            "provisioningState": self._nic_state(nic),
            "resourceGuid": str(uuid.uuid5(uuid.NAMESPACE_URL, nic.resource_id)),
            "ipConfigurations": [{
                "id": f"{nic.resource_id}/ipConfigurations/{config['name']}",
                "name": config["name"],
                "type": f"{NETWORK}/networkInterfaces/ipConfigurations",
                "properties": {
                    "provisioningState": self._nic_state(nic),
                    "privateIPAddress": nic.private_ip,
                    "privateIPAllocationMethod": "Dynamic",
                    "subnet": {"id": config["subnet"]},
                    "primary": True,
                    "privateIPAddressVersion": "IPv4",
                },
            }],
            "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
            "enableAcceleratedNetworking": False,
            "enableIPForwarding": False,
            "nicType": "Standard",
        }
        if nic.attached_to:
            properties["virtualMachine"] = {"id": nic.attached_to}
        return {
            "id": nic.resource_id, "name": nic.name, "type": f"{NETWORK}/networkInterfaces",
            "location": nic.location, "tags": nic.tags,
            "etag": f'W/"{uuid.uuid4()}"', "properties": properties,
        }

    def _put_networkInterfaces(self, request: Request, key: tuple[str, str],
                               params: dict[str, str]) -> Response:
        body = request.get_json(silent=True) or {}
        configs = (body.get("properties") or {}).get("ipConfigurations") or []
        if not configs:
            return _error(400, "InvalidRequestFormat",
                          "Cannot parse the request: a network interface needs an ipConfiguration.")
        config = configs[0]
        subnet = ((config.get("properties") or {}).get("subnet") or {}).get("id", "")
        resource_id = (f"/subscriptions/{self.subscription_id}/resourceGroups/{params['rg']}"
                       f"/providers/{NETWORK}/networkInterfaces/{params['name']}")
        if subnet.lower() != self.subnet_id.lower():
            return _error(400, "InvalidResourceReference",
                          f"Resource {subnet} referenced by resource {resource_id} was not found. "
                          "Please make sure that the referenced resource exists, and that both "
                          "resources are in the same region.")
        existing = self._nics.get(key)
        if existing is not None:
            existing.tags = body.get("tags") or existing.tags
            existing.reads += 1
            headers = self._start_operation(NETWORK, "create", key, location_header=False)
            return _json(200, self._nic_body(existing), headers)
        nic = _Nic(
            key=key, resource_id=resource_id, name=params["name"],
            location=body.get("location") or self.location, tags=body.get("tags") or {},
            ip_configuration={"name": config.get("name") or "ipconfig1", "subnet": subnet},
            private_ip=str(next(self._addresses)), updating_reads=self.nic_updating_reads,
        )
        self._nics[key] = nic
        headers = self._start_operation(NETWORK, "create", key, location_header=False)
        return _json(201, self._nic_body(nic), headers)

    def _get_networkInterfaces(self, request: Request, key: tuple[str, str],
                               params: dict[str, str]) -> Response:
        nic = self._nics.get(key)
        if nic is None:
            return self._not_found("networkInterfaces", NETWORK, params)
        nic.reads += 1
        return _json(200, self._nic_body(nic))

    def _delete_networkInterfaces(self, request: Request, key: tuple[str, str],
                                  params: dict[str, str]) -> Response:
        nic = self._nics.get(key)
        if nic is None:
            return _json(204, None)
        attached = nic.attached_to and self._vms.get(self._key_of(nic.attached_to))
        if attached:
            return _error(400, "NicInUse",
                          f"Network Interface {nic.resource_id} is used by existing resource "
                          f"{nic.attached_to}. In order to delete the network interface, it must "
                          "be dissociated from the resource.")
        del self._nics[key]
        headers = self._start_operation(NETWORK, "delete", key, location_header=True)
        return _json(202, None, headers)

    # -- virtual machines -------------------------------------------------------------------

    @staticmethod
    def _key_of(resource_id: str) -> tuple[str, str]:
        parts = resource_id.strip("/").split("/")
        return parts[3].lower(), parts[-1].lower()

    def _advance(self, key: tuple[str, str]) -> _Vm | None:
        """One read of a VM: time moves on for it (and a finished delete removes it)."""
        vm = self._vms.get(key)
        if vm is None:
            return None
        if not vm.deleting:
            vm.reads += 1
            return vm
        vm.delete_reads += 1
        if vm.delete_reads <= self.deleting_reads:
            return vm
        del self._vms[key]
        for reference in vm.properties["networkProfile"]["networkInterfaces"]:
            nic_key = self._key_of(reference["id"])
            nic = self._nics.get(nic_key)
            if nic is None:
                continue
            nic.attached_to = None
            if (reference.get("properties") or {}).get("deleteOption") == "Delete":
                del self._nics[nic_key]
        return None

    def _vm_state(self, vm: _Vm) -> str:
        if vm.deleting:
            return "Deleting"
        if vm.reads <= self.creating_reads:
            return "Creating"
        return "Failed" if vm.failure else "Succeeded"

    def _instance_view(self, vm: _Vm) -> dict[str, Any]:
        state = self._vm_state(vm)
        statuses: list[dict[str, Any]] = []
        if state == "Failed":
            code, message = vm.failure or ("Unknown", "")
            statuses.append({"code": f"ProvisioningState/failed/{code}", "level": "Error",
                             "displayStatus": "Provisioning failed", "message": message,
                             "time": _now()})
        else:
            statuses.append({"code": f"ProvisioningState/{state.lower()}", "level": "Info",
                             "displayStatus": f"Provisioning {state.lower()}", "time": _now()})
        power = {"Succeeded": ("running", "VM running"),
                 "Deleting": ("deallocating", "VM deallocating")}.get(state)
        if vm.powered_off and state == "Succeeded":
            power = ("stopped", "VM stopped")
        if power:
            statuses.append({"code": f"PowerState/{power[0]}", "level": "Info",
                             "displayStatus": power[1]})
        view: dict[str, Any] = {
            "computerName": vm.properties.get("osProfile", {}).get("computerName"),
            "osName": "ubuntu", "osVersion": "22.04",
            "hyperVGeneration": "V2",
            "statuses": statuses,
        }
        if state == "Succeeded":
            ready = vm.reads > self.creating_reads + self.agent_reads
            view["vmAgent"] = {
                "vmAgentVersion": "2.11.1.12" if ready else "Unknown",
                "statuses": [
                    {"code": "ProvisioningState/succeeded", "level": "Info",
                     "displayStatus": "Ready", "message": "Guest Agent is running",
                     "time": _now()}
                    if ready else
                    {"code": "ProvisioningState/Unavailable", "level": "Warning",
                     "displayStatus": "Not Ready",
                     "message": "VM status blob is found but not yet populated.",
                     "time": _now()}
                ],
            }
        return view

    def _vm_body(self, vm: _Vm, instance_view: bool) -> dict[str, Any]:
        properties = json.loads(json.dumps(vm.properties))
        properties.get("osProfile", {}).pop("adminPassword", None)  # ARM never returns it
        os_disk = properties["storageProfile"].setdefault("osDisk", {})
        os_disk.setdefault("name", f"{vm.name}_OsDisk_1_{vm.vm_id.replace('-', '')}")
        os_disk.setdefault("osType", "Linux")
        os_disk.setdefault("managedDisk", {"storageAccountType": "Premium_LRS"})
        properties.update({
            "vmId": vm.vm_id, "provisioningState": self._vm_state(vm),
            "timeCreated": vm.created_at,
        })
        if instance_view:
            properties["instanceView"] = self._instance_view(vm)
        body = {
            "id": vm.resource_id, "name": vm.name, "type": f"{COMPUTE}/virtualMachines",
            "location": vm.location, "tags": vm.tags, "properties": properties,
        }
        if vm.identity is not None:
            body["identity"] = vm.identity
        return body

    def _not_found(self, kind: str, namespace: str, params: dict[str, str]) -> Response:
        return _error(404, "ResourceNotFound",
                      f"The Resource '{namespace}/{kind}/{params['name']}' under resource group "
                      f"'{params['rg']}' was not found. For more details please go to "
                      "https://aka.ms/ARMResourceNotFoundFix")

    def _put_virtualMachines(self, request: Request, key: tuple[str, str],
                             params: dict[str, str]) -> Response:
        body = request.get_json(silent=True) or {}
        properties = body.get("properties") or {}
        resource_id = (f"/subscriptions/{self.subscription_id}/resourceGroups/{params['rg']}"
                       f"/providers/{COMPUTE}/virtualMachines/{params['name']}")
        invalid = self._invalid_vm(properties, resource_id)
        if invalid is not None:
            return invalid
        existing = self._vms.get(key)
        if existing is not None:
            if existing.deleting:
                return _error(409, "OperationNotAllowed",
                              "Operation 'Put' is not allowed on VM "
                              f"'{existing.name}' since the VM is marked for deletion.")
            existing.tags = body.get("tags") or existing.tags
            headers = self._start_operation(COMPUTE, "create", key, location_header=False)
            return _json(200, self._vm_body(existing, instance_view=False), headers)
        vm = _Vm(
            key=key, resource_id=resource_id, name=params["name"],
            location=body.get("location") or self.location, tags=body.get("tags") or {},
            properties=properties, vm_id=str(uuid.uuid4()), created_at=self.clock().isoformat(),
            failure=self._provisioning_failures.pop(0) if self._provisioning_failures else None,
            identity=body.get("identity"),
        )
        self._vms[key] = vm
        for reference in properties["networkProfile"]["networkInterfaces"]:
            self._nics[self._key_of(reference["id"])].attached_to = resource_id
        headers = self._start_operation(COMPUTE, "create", key, location_header=False)
        return _json(201, self._vm_body(vm, instance_view=False), headers)

    def _invalid_vm(self, properties: dict[str, Any], resource_id: str) -> Response | None:
        size = (properties.get("hardwareProfile") or {}).get("vmSize")
        if not size:
            return _error(400, "InvalidParameter", "Required parameter 'vmSize' is missing.")
        if size in RETIRED_SIZES:
            return _error(409, "SkuNotAvailable",
                          f"The requested VM size for resource 'Following SKUs have failed for "
                          f"Capacity Restrictions: {size}' is currently not available in "
                          f"location '{self.location}'. Please try another size or deploy to a "
                          f"different location or different zone.")
        references = (properties.get("networkProfile") or {}).get("networkInterfaces") or []
        if not references:
            return _error(400, "InvalidParameter",
                          "Required parameter 'networkProfile' is missing (null).")
        for reference in references:
            nic = self._nics.get(self._key_of(reference.get("id", "/////x")))
            if nic is None:
                return _error(400, "InvalidResourceReference",
                              f"Resource {reference.get('id')} referenced by resource "
                              f"{resource_id} was not found.")
            if nic.attached_to and nic.attached_to.lower() != resource_id.lower():
                return _error(400, "NicInUse",
                              f"Network interface {nic.resource_id} is in use by "
                              f"{nic.attached_to}.")
        linux = (properties.get("osProfile") or {}).get("linuxConfiguration") or {}
        keys = (linux.get("ssh") or {}).get("publicKeys") or []
        if linux.get("disablePasswordAuthentication") and not keys:
            return _error(400, "InvalidParameter",
                          "Authentication using either SSH or by user name and password must "
                          "be enabled in Linux profile.")
        if not (properties.get("storageProfile") or {}).get("imageReference"):
            return _error(400, "InvalidParameter",
                          "Required parameter 'imageReference' is missing (null).")
        return None

    def _get_virtualMachines(self, request: Request, key: tuple[str, str],
                             params: dict[str, str]) -> Response:
        vm = self._advance(key)
        if vm is None:
            return self._not_found("virtualMachines", COMPUTE, params)
        expand = request.args.get("$expand", "")
        return _json(200, self._vm_body(vm, instance_view=expand.lower() == "instanceview"))

    def _list_virtualMachines(self, request: Request) -> Response:
        """Every VM of the group, one page (ARM pages with nextLink; the SDK follows it).
        Each listed VM counts as a read of it, so time moves on for it as for a GET."""
        if request.method != "GET":
            return _error(405, "MethodNotAllowed", f"{request.method} is not faked on a list.")
        listed = [self._advance(key) for key in list(self._vms)]
        return _json(200, {"value": [self._vm_body(vm, instance_view=False)
                                     for vm in listed if vm is not None]})

    def _get_instanceView(self, request: Request, key: tuple[str, str],
                          params: dict[str, str]) -> Response:
        vm = self._advance(key)
        if vm is None:
            return self._not_found("virtualMachines", COMPUTE, params)
        return _json(200, self._instance_view(vm))

    def _delete_virtualMachines(self, request: Request, key: tuple[str, str],
                                params: dict[str, str]) -> Response:
        vm = self._vms.get(key)
        if vm is None:
            return _json(204, None)  # ARM: deleting what is not there succeeds with No Content
        vm.deleting = True  # a repeated DELETE joins the deletion under way
        return _json(202, None, self._start_operation(COMPUTE, "delete", key, True))


class _QuietRequestHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are in `ArmFake.calls`; one log line per request would drown the output."""


@dataclass(frozen=True)
class ServedArm:
    fake: ArmFake
    url: str
    ca_bundle: str  # the PEM file a client trusts to reach `url` over TLS


@cache
def _tls_files() -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made once per process (a client verifies it
    against this same file, so the bearer token still only travels over TLS)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arm-fake.local")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
            ]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="arm-fake-"))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return str(cert_file), str(key_file)


@contextmanager
def served(
    fake: ArmFake, port: int = 0, fd: int | None = None, poll_interval: float = 0.01
) -> Iterator[ServedArm]:
    """Serve `fake` over HTTPS on 127.0.0.1 (a free port unless `port` is given) in a thread;
    `fd`: a socket already bound and listening to serve on instead. `poll_interval`: how
    often the server thread wakes to check for shutdown (short for a server per test, long
    for one that serves a whole session and would otherwise wake 100 times a second)."""
    cert_file, key_file = _tls_files()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = make_server(
        "127.0.0.1", port, fake, threaded=True, ssl_context=context,
        request_handler=_QuietRequestHandler, fd=fd,
    )
    fake.base_url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True,
        name="arm-fake",
    )
    thread.start()
    try:
        yield ServedArm(fake, fake.base_url, cert_file)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
