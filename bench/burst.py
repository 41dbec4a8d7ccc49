"""A burst of concurrent POST /api/instances against `make run` (`python -m local.run` on free
ports, agents and all): is every one answered, in what time (p50/p99), with how many
connection resets; then does every workflow finish (READY or ERROR), none lost?

Target (issue 9.5): 200 concurrent POSTs all answered, no reset; the emulated workflows may
take their time, but none is lost.
Run: .venv/bin/python bench/burst.py [count] [--root DIR] [--settle SECONDS]
  --root: the checkout whose `make run` to measure (default this one; e.g. an older one to
  compare, with its own .venv)."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
HEADERS = {"Authorization": "Bearer dev:burst", "Content-Type": "application/json"}
STARTING = {"PROVISIONING", "CONFIGURING"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def request(port: int, method: str, path: str, body: Any = None, timeout: float = 300) -> Any:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(
            method, path, body=json.dumps(body) if body is not None else None, headers=HEADERS
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def wait_until_serving(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"make run exited with {process.returncode} before serving")
        try:
            if request(port, "GET", "/api/openapi.json", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("make run did not serve in time")


def burst(port: int, count: int) -> tuple[list[float], Counter[str], list[str]]:
    """`count` threads, released together, each one POST on its own connection."""
    gate = threading.Barrier(count)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    ids: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        gate.wait()
        started = time.perf_counter()
        try:
            status, body = request(port, "POST", "/api/instances", {"instanceType": "g4dn.xlarge"})
            outcome = str(status)
        except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError,
                http.client.RemoteDisconnected) as error:
            status, body, outcome = None, None, f"reset ({type(error).__name__})"
        except OSError as error:
            status, body, outcome = None, None, f"error ({type(error).__name__})"
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            outcomes[outcome] += 1
            if status is not None:
                latencies.append(elapsed)
            if status == 202:
                ids.append(body["id"])

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, outcomes, ids


def statuses(port: int, ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    cursor = None
    while True:
        path = "/api/instances?limit=100" + (f"&cursor={cursor}" if cursor else "")
        _, page = request(port, "GET", path)
        found.update({
            i["id"]: i["status"] if i["status"] != "ERROR"
            else f"ERROR {str(i['statusReason']).split(':')[0]}"
            for i in page["items"]
        })
        cursor = page.get("nextCursor")
        if not cursor:
            return {i: found.get(i, "MISSING") for i in ids}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", nargs="?", type=int, default=200)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--settle", type=float, default=900.0)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MOTO_PORT": str(free_port())}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(args.root / ".venv/bin/python"), "-m", "local.run"], cwd=args.root, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_until_serving(port, process, time.monotonic() + 120)
            started = time.perf_counter()
            latencies, outcomes, ids = burst(port, args.count)
            burst_seconds = time.perf_counter() - started
            resets = sum(n for outcome, n in outcomes.items() if outcome.startswith("reset"))
            print(f"make run of {args.root}: {args.count} concurrent POST /api/instances")
            print(f"  answers: {dict(outcomes)}; connection resets: {resets}")
            if latencies:
                print(
                    f"  latency ms: p50 {statistics.median(latencies):.0f}, "
                    f"p99 {percentile(latencies, 0.99):.0f}, max {max(latencies):.0f}; "
                    f"burst answered in {burst_seconds:.1f} s"
                )
            settle_started = time.monotonic()
            deadline = settle_started + args.settle
            current = statuses(port, ids)
            while any(s in STARTING for s in current.values()) and time.monotonic() < deadline:
                time.sleep(2)
                current = statuses(port, ids)
            tally = Counter(current.values())
            starting = sum(n for s, n in tally.items() if s in STARTING | {"MISSING"})
            # READY or ERROR <reason>: finished either way; a record still starting at the
            # deadline, or missing, is what "lost" means here.
            print(
                f"  workflows: {dict(tally)} after {time.monotonic() - settle_started:.0f} s; "
                f"still starting or lost: {starting}"
            )
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
            log.seek(0)
            lines = log.read().decode(errors="replace").splitlines()
            print(f"  make run's last line: {lines[-1] if lines else '(none)'}")


if __name__ == "__main__":
    sys.exit(main())
