"""A Lambda cold start: importing app.py loads no cloud SDK and builds no client; the first
request builds only the clients it uses, once each (however many threads ask at once), all
on one botocore session."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.handlers import BUILTIN_HANDLERS

from chalicelib import bootstrap
from chalicelib.bootstrap import Container
from local.emulator import EmulatedAws

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
import app
from chalicelib import bootstrap
print(json.dumps({
    "modules": sorted(sys.modules),
    "container_built": bootstrap._container is not None,
}))
"""


def import_app_in_a_fresh_interpreter() -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def test_importing_the_app_imports_no_azure_module():
    loaded = import_app_in_a_fresh_interpreter()

    assert [m for m in loaded["modules"] if m.split(".")[0].startswith(("azure", "msal"))] == []


def test_importing_the_app_builds_no_client_and_imports_no_aws_sdk():
    loaded = import_app_in_a_fresh_interpreter()

    assert not loaded["container_built"]
    assert [m for m in loaded["modules"] if m.split(".")[0] in ("boto3", "pynamodb")] == []


@pytest.fixture
def clients_built() -> Iterator[Counter[str]]:
    """The AWS clients built from now on, by service, on boto3's default session or on any
    botocore session made from now on: a handler of botocore's own `creating-client-class`
    event, registered with the default session and with every new one (as moto registers
    its own)."""
    built: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        built[event_name.rsplit(".", 1)[-1]] += 1

    spec = ("creating-client-class", count)
    BUILTIN_HANDLERS.append(spec)
    default = boto3.DEFAULT_SESSION
    if default is not None:
        default.events.register(*spec)
    try:
        yield built
    finally:
        BUILTIN_HANDLERS.remove(spec)
        if default is not None:
            default.events.unregister(*spec)


def fresh_container(aws: EmulatedAws, clock: Callable[[], datetime]) -> Container:
    """The container of a new Lambda process: the real clients (no test hooks), nothing
    built yet."""
    return Container(settings=aws.settings, clock=clock, azure_connection=aws.azure)


def test_a_cold_get_builds_one_dynamodb_client_and_no_eventbridge_or_step_functions_client(
    api, aws, clock, clients_built
):
    instance = api.provision()
    aws.wait_for_workflows()
    bootstrap.use(fresh_container(aws, clock))
    clients_built.clear()

    assert api.get(instance["id"])["status"] == "READY"

    assert clients_built == {"dynamodb": 1}


def test_pynamodb_and_boto3_build_their_clients_on_one_botocore_session(aws, clock):
    container = fresh_container(aws, clock)
    built_on_it: list[str] = []
    container.botocore_session.register(
        "creating-client-class", lambda event_name, **_: built_on_it.append(event_name)
    )

    _ = container.records, container.leases, container.control_client, container.events

    assert [name.rsplit(".", 1)[-1] for name in built_on_it] == [
        "dynamodb", "dynamodb", "dynamodb", "eventbridge",
    ]


def test_concurrent_first_requests_build_each_client_once(aws, clock, clients_built):
    container = fresh_container(aws, clock)
    requests = 8
    together = threading.Barrier(requests)

    def first_request(_: int) -> tuple[object, ...]:
        together.wait()
        assert container.repository.get("inst-" + "0" * 32) is None
        return container.records, container.repository, container.events

    with ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(first_request, range(requests)))

    assert len(set(answers)) == 1
    # PynamoDB's client of the records; the EventBridge client of the events.
    assert clients_built == {"dynamodb": 1, "eventbridge": 1}
