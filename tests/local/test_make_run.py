"""`make run` as a new user runs it (`python -m local.run`, on free ports): its console shows
an instance's lifecycle and stays quiet otherwise; a busy port ends it at once, naming the
variable to change; on stop it says how many live instances it discards."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice import Chalice

from local import run

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120.0  # seconds any one awaited line may take on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Console:
    """The merged output of a `make run` process, read line by line as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.ended = False  # the output reached its end (the process closed it)
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, pattern: str) -> str:
        """The first line matching `pattern`, waiting for it (a condition, not a sleep)."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.lines if regex.search(line)), None)

        with self.changed:
            if not self.changed.wait_for(lambda: found() is not None or self.ended, WAIT) \
                    or found() is None:
                raise AssertionError(f"no line matches {pattern!r}:\n" + self.text)
            return str(found())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def make_run() -> Iterator[Callable[..., Console]]:
    started: list[subprocess.Popen[str]] = []

    def start(**env: str) -> Console:
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("AWS_")
        }
        environment.update(env)
        process = subprocess.Popen(
            [sys.executable, "-m", "local.run"], cwd=ROOT, env=environment, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        started.append(process)
        return Console(process)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer dev:alice", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return response.status, json.loads(response.read() or b"null")


def test_the_console_shows_a_lifecycle_and_nothing_else_and_what_a_stop_discards(make_run):
    port = free_port()
    console = make_run(
        PORT=str(port), MOTO_PORT=str(free_port()), REAPER_INTERVAL_SECONDS="1"
    )
    console.wait_for(rf"listening on http://127\.0\.0\.1:{port}")
    api = f"http://127.0.0.1:{port}/api/instances"

    status, first = call("POST", api, {"instanceType": "g4dn.xlarge"})
    assert status == 202
    story = rf"^\d\d:\d\d:\d\d  {first['id']}  alice  g4dn\.xlarge  "
    console.wait_for(story + r"new -> PROVISIONING$")
    console.wait_for(story + r"PROVISIONING -> CONFIGURING$")
    console.wait_for(story + r"CONFIGURING -> READY$")
    call("DELETE", f"{api}/{first['id']}")
    console.wait_for(story + r"READY -> STOPPING  \(user_request\)$")
    console.wait_for(story + r"STOPPING -> TERMINATED  \(user_request\)$")
    _, second = call("POST", api, {"instanceType": "g4dn.xlarge"})
    console.wait_for(rf"{second['id']}  alice  g4dn\.xlarge  new -> PROVISIONING$")

    console.process.send_signal(signal.SIGINT)
    assert console.process.wait(WAIT) == 0
    console.wait_for(r"discarding 1 live instance \(1 (PROVISIONING|CONFIGURING|READY)\)")
    text = console.text
    assert '"_aws"' not in text  # metrics
    assert "HTTP/1.1" not in text  # the access log
    assert "Found credentials" not in text
    assert "Request URL" not in text and "Response headers" not in text  # Azure SDK dumps
    assert "not a supported in local mode" not in text
    assert "Traceback" not in text


def test_a_busy_moto_port_ends_make_run_within_seconds_naming_the_variable(make_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        started = time.monotonic()
        console = make_run(PORT=str(free_port()), MOTO_PORT=str(busy))

        assert console.process.wait(WAIT) == 1
        line = console.wait_for(r"MOTO_PORT")
        assert time.monotonic() - started < 30
    assert f"port {busy} on 127.0.0.1 is in use by another program" in line
    assert "choose another port for MOTO_PORT" in line


@pytest.mark.parametrize("variable", ["MOTO_PORT", "ARM_PORT"])
def test_a_busy_emulation_port_is_refused_with_the_variable_named(variable):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]

        with pytest.raises(run.PortInUse) as refused:
            run.listening_socket(variable, busy)

    assert refused.value.code is not None
    assert f"choose another port for {variable}" in str(refused.value.code)


def test_a_busy_api_port_is_refused_with_port_named():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]

        class Probe:
            app = Chalice(app_name="probe")

        with pytest.raises(run.PortInUse) as refused:
            run.api_server(Probe, busy)

    assert "choose another port for PORT," in str(refused.value.code)
