"""Time from POST /api/instances to READY in the local emulation, as `make run` sets it up
(Wait states of WORKFLOW_POLL_SECONDS real seconds, retries that really wait).

Target (issue 2): a provisioned AWS instance reaches READY on its own within seconds.
Run: .venv/bin/python bench/provision_to_ready.py [count] [poll_seconds]"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalice.test import Client  # noqa: E402

from chalicelib import bootstrap  # noqa: E402
from chalicelib.bootstrap import Container  # noqa: E402
from local.emulator import emulated_aws  # noqa: E402


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    poll_seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with emulated_aws(poll_seconds=poll_seconds, max_checks=60, instant_retries=False) as aws:
        bootstrap.use(Container(settings=aws.settings))
        import app

        headers = {"Authorization": "Bearer dev:bench", "Content-Type": "application/json"}
        body = json.dumps({"instanceType": "g4dn.xlarge"})
        with Client(app.app) as client:
            post_ms = []
            ids = []
            started = time.perf_counter()
            for _ in range(count):
                t0 = time.perf_counter()
                response = client.http.post("/api/instances", headers=headers, body=body)
                post_ms.append((time.perf_counter() - t0) * 1000)
                ids.append(json.loads(response.body)["id"])
            aws.wait_for_workflows(timeout=120)
            wall = time.perf_counter() - started
            to_ready = []
            for instance_id in ids:
                record = json.loads(
                    client.http.get(f"/api/instances/{instance_id}", headers=headers).body
                )
                assert record["status"] == "READY", record["status"]
                elapsed = parse(record["readyAt"]) - parse(record["createdAt"])
                to_ready.append(elapsed.total_seconds())
    print(f"instances: {count}, Wait state seconds: {poll_seconds}")
    print(f"POST latency ms: median {statistics.median(post_ms):.1f}, max {max(post_ms):.1f}")
    print(
        f"POST -> READY s: median {statistics.median(to_ready):.2f}, "
        f"min {min(to_ready):.2f}, max {max(to_ready):.2f}"
    )
    print(f"all {count} READY after {wall:.2f} s wall time")


if __name__ == "__main__":
    main()
