"""The first GET /api/instances/{id} and the first POST /api/instances of a fresh process
(a Lambda cold start) against the warm ones, with the AWS clients each builds and the time
spent building them.

Target (issue 9.8): a cold GET builds no EventBridge or Step Functions client; PynamoDB and
boto3 share one botocore session, so the SDK's JSON models and endpoint data are parsed once.
Each sample is a fresh interpreter (`--sample get|post`): it starts the emulation (which
imports the modules and creates the resources with boto3), then forgets boto3's default
session, so the service's clients start from a cold botocore loader as in a Lambda, and
freezes the emulation's objects out of the garbage collector's way; it serves the request
once (cold), then `repeats` times (warm, the median). For the GET, the
record is written beforehand with PynamoDB on a connection the service does not reuse.
Only the clients built by the request itself are counted (the workflow execution a POST
starts runs in moto's threads, and is joined before the next request).
Run: .venv/bin/python bench/cold_start.py [samples] [repeats]"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADERS = {"Authorization": "Bearer dev:alice", "Content-Type": "application/json"}
NOW = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


class Builds:
    """Counts, on the request's thread, the botocore sessions and clients built, the SDK's
    JSON files parsed, and the seconds spent building clients (wrapping botocore here only)."""

    def __init__(self) -> None:
        self.counting = False
        self.sessions = 0
        self.clients: Counter[str] = Counter()
        self.client_seconds: Counter[str] = Counter()
        self.files: Counter[str] = Counter()
        self._thread = threading.current_thread()

    def _mine(self) -> bool:
        return self.counting and threading.current_thread() is self._thread

    def install(self) -> None:
        import botocore.loaders
        import botocore.session

        session_init = botocore.session.Session.__init__
        create_client = botocore.session.Session.create_client
        load_file = botocore.loaders.JSONFileLoader.load_file

        def counted_init(session: Any, *args: Any, **kwargs: Any) -> None:
            if self._mine():
                self.sessions += 1
            session_init(session, *args, **kwargs)

        def timed_create_client(session: Any, service_name: str, *args: Any,
                                **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return create_client(session, service_name, *args, **kwargs)
            finally:
                if self._mine():
                    self.clients[service_name] += 1
                    self.client_seconds[service_name] += time.perf_counter() - started

        def counted_load_file(loader: Any, file_path: str) -> Any:
            if self._mine():
                self.files[Path(file_path).name] += 1
            return load_file(loader, file_path)

        botocore.session.Session.__init__ = counted_init
        botocore.session.Session.create_client = timed_create_client
        botocore.loaders.JSONFileLoader.load_file = counted_load_file


def seed_record(settings: Any) -> str:
    """One READY record of alice's, written with PynamoDB on a connection of its own (the
    service's container points the model at the table again, with a new connection)."""
    from chalicelib.bootstrap import Container
    from chalicelib.domain.instance import Instance, StatusChange
    from chalicelib.domain.states import InstanceStatus

    kind = Container(settings=settings).catalog.find("g4dn.xlarge")
    record = Instance(
        id=f"inst-{1:032x}", user_id="alice", provider="aws", region=settings.region,
        instance_type=kind.name, gpu_model=kind.gpu_model, gpu_count=kind.gpu_count,
        hourly_usd=kind.hourly_usd, billing_rule=kind.billing_rule, idle_timeout_minutes=30,
        status=InstanceStatus.READY, created_at=NOW, updated_at=NOW, status_entered_at=NOW,
        last_activity_at=NOW, launched_at=NOW,
        status_history=(StatusChange(InstanceStatus.READY, NOW),),
    )
    from chalicelib.persistence.dynamodb import _to_model

    _to_model(record, settings.policy).save()
    return record.id


def sample(kind: str, repeats: int) -> dict[str, Any]:
    """In this (fresh) interpreter: the cold request, then the warm ones."""
    import boto3
    from chalice.test import Client

    import app
    from chalicelib import bootstrap
    from chalicelib.bootstrap import Container
    from local.emulator import emulated_aws
    from tests.simulated_agents import SimulatedAgents

    builds = Builds()
    builds.install()
    with emulated_aws() as aws:
        instance_id = seed_record(aws.settings) if kind == "get" else ""
        boto3.DEFAULT_SESSION = None  # the service's clients start from a cold loader
        # moto's backends are some 400,000 objects a Lambda does not have: a full garbage
        # collection of them (about 0.35 s here) would land in one request and not another.
        gc.freeze()
        bootstrap.use(Container(settings=aws.settings, azure_connection=aws.azure))
        with Client(app.app) as client:
            def get() -> None:
                response = client.http.get(f"/api/instances/{instance_id}", headers=HEADERS)
                assert response.status_code == 200, response.body

            def post() -> None:
                response = client.http.post(
                    "/api/instances", headers=HEADERS,
                    body=json.dumps({"instanceType": "g4dn.xlarge"}),
                )
                assert response.status_code == 202, response.body

            def agent_post(path: str, body: dict, headers: dict[str, str]) -> tuple[int, Any]:
                response = client.http.post(
                    path, body=json.dumps(body),
                    headers={"Content-Type": "application/json", **headers},
                )
                return response.status_code, json.loads(response.body or b"null")

            # The workflow a POST starts waits for the request to be answered (in a Lambda
            # it runs elsewhere), then its machine's agent reports as in the tests.
            answered = threading.Event()
            agents = SimulatedAgents(agent_post, aws.arm_fake)

            def before_step(name: str, event: dict) -> None:
                answered.wait()
                agents.before_step(name, event)

            aws.router.before_step = before_step
            request: Callable[[], None] = get if kind == "get" else post

            def timed() -> tuple[float, float]:
                """Wall seconds, and this thread's CPU seconds (less moved by the load of
                other processes on the machine)."""
                answered.clear()
                started, cpu = time.perf_counter(), time.thread_time()
                request()
                seconds = time.perf_counter() - started, time.thread_time() - cpu
                answered.set()
                aws.wait_for_workflows()
                return seconds

            builds.counting = True
            cold = timed()
            builds.counting = False
            warm = [timed() for _ in range(repeats)]
        bootstrap.use(None)
    return {
        "cold": cold[0], "warm": statistics.median(w for w, _ in warm),
        "cold_cpu": cold[1], "warm_cpu": statistics.median(c for _, c in warm),
        "clients": dict(builds.clients), "client_seconds": dict(builds.client_seconds),
        "sessions": builds.sessions,
        "files": dict(builds.files),
    }


def clients_sample(shared: bool) -> dict[str, Any]:
    """In this (fresh) interpreter: the seconds (this thread's CPU) to build the clients a
    cold POST builds, PynamoDB's and boto3's, on one botocore session or on one each."""
    import os

    import boto3.session
    import botocore.session

    from chalicelib.persistence.dynamodb import InstanceModel, configure_instance_model
    from local.emulator import FAKE_CREDENTIALS, REGION

    os.environ.update(FAKE_CREDENTIALS)
    # The modules botocore imports at its first client, on a session thrown away (its
    # loader's cache goes with it), as the emulation imports them in the other samples.
    botocore.session.get_session().create_client("sqs", region_name=REGION)
    gc.freeze()  # the imported modules (moto's among them) are not collected in the timing
    started = time.thread_time()
    core = botocore.session.get_session()
    boto = boto3.session.Session(botocore_session=core)
    for service in ("dynamodb", "events", "stepfunctions"):
        boto.client(service, region_name=REGION)
    configure_instance_model("records", REGION, session=core if shared else None)
    _ = InstanceModel._get_connection().connection.client  # PynamoDB's own session if not
    return {"seconds": time.thread_time() - started}


def run_sample(kind: str, repeats: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--sample", kind, str(repeats)], cwd=ROOT,
        capture_output=True, text=True, timeout=600, check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"the {kind} sample failed:\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return result


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    print(f"{samples} fresh processes per request, warm = median of {repeats} repeats; "
          "medians of the samples")
    for kind, label in (("get", "GET /api/instances/{id}"), ("post", "POST /api/instances")):
        results = [run_sample(kind, repeats) for _ in range(samples)]

        cold, warm, cold_cpu, warm_cpu = (
            statistics.median(r[key] for r in results)
            for key in ("cold", "warm", "cold_cpu", "warm_cpu")
        )
        print(f"{label}: cold {cold * 1000:.0f} ms, warm {warm * 1000:.1f} ms, "
              f"cold/warm {cold / warm:.0f}x (CPU of the request's thread: cold "
              f"{cold_cpu * 1000:.0f} ms, warm {warm_cpu * 1000:.1f} ms, "
              f"{cold_cpu / warm_cpu:.0f}x)")
        first = results[0]
        building = {
            service: statistics.median(r["client_seconds"].get(service, 0) for r in results)
            for service in first["clients"]
        }
        clients = ", ".join(
            f"{n} {s} {building[s] * 1000:.0f} ms" for s, n in sorted(first["clients"].items())
        ) or "none"
        parsed = sum(first["files"].values())
        endpoints = first["files"].get("endpoints", 0)
        print(f"  the cold one built: {clients} (total {sum(building.values()) * 1000:.0f} ms),"
              f" on {first['sessions']} new botocore session(s), parsing {parsed} SDK JSON "
              f"files ({endpoints} x the endpoint data)")
    apart, shared = (
        statistics.median(run_sample(kind, 0)["seconds"] for _ in range(samples))
        for kind in ("clients-apart", "clients-shared")
    )
    print(f"building a cold POST's 4 clients (CPU): PynamoDB on a botocore session of its "
          f"own {apart * 1000:.0f} ms, on boto3's {shared * 1000:.0f} ms "
          f"(saves {(apart - shared) * 1000:.0f} ms)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--sample":
        kind = sys.argv[2]
        print(json.dumps(
            clients_sample(kind == "clients-shared") if kind.startswith("clients-")
            else sample(kind, int(sys.argv[3]))
        ))
    else:
        main()
