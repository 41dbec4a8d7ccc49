#!/usr/bin/env python3
"""Instance Provisioner agent: reports the GPUs, heartbeats their use, stops the machine when
told to or cut off from the service (docs/agent.md)."""
# Standard library, Python 3.8 (GPU images ship old Pythons), small (user data is 16 KB at most).
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

UTC = timezone.utc
# (method, url, headers, body, timeout) -> (status, body); raises OSError when unanswered.
Transport = Callable[[str, str, Dict[str, str], Optional[bytes], float], Tuple[int, bytes]]
# (argv, timeout) -> (exit code, stdout, stderr).
Runner = Callable[[List[str], float], Tuple[int, str, str]]

IMDS = "http://169.254.169.254"
ARM = "https://management.azure.com"
CSV = "--format=csv,noheader,nounits"
READY_QUERY = ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version,"
               "ecc.errors.uncorrected.volatile.total", CSV]
USE_QUERY = ["nvidia-smi", "--query-gpu=index,uuid,utilization.gpu,memory.used", CSV]
APPS_QUERY = ["nvidia-smi", "--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader"]
POWER_OFF = ["shutdown", "-h", "now"]
STOPPED, STOP_FAILED, BAD_CONFIG = 0, 1, 2


class GpuError(Exception):
    """nvidia-smi gave no usable answer; the message is the reason the service is sent."""


def deadline(value: object) -> float | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def number(text: str) -> int | None:
    """nvidia-smi's number, or None for its [N/A] and [Not Supported]."""
    try:
        return int(float(text))
    except (ValueError, OverflowError):
        return None


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:160]


def seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number, not {value!r}")
    return float(value)


class Agent:
    """One machine's agent; HTTP, commands, clocks and sleep are passed in."""

    def __init__(self, config: dict[str, Any], transport: Transport, run: Runner,
                 clock: Callable[[], float], sleep: Callable[[float], None],
                 log: Callable[[str], None], monotonic: Callable[[], float] | None = None,
                 imds_url: str = IMDS, arm_url: str = ARM) -> None:
        self.instance_id, self.secret = str(config["instanceId"]), str(config["secret"])
        if not self.secret:
            raise ValueError("secret is empty")
        self.base = f"{config['url'].rstrip('/')}/api/agent/instances/{self.instance_id}/"
        self.heartbeat = seconds(config.get("heartbeatSeconds", 60), "heartbeatSeconds")
        self.deadman = seconds(config.get("deadmanSeconds", 2400), "deadmanSeconds")
        self.deadline = deadline(config.get("lifetimeDeadline"))
        self.idle_percent = float(config.get("idleGpuUtilizationPercent", 5))
        self.command_timeout = float(config.get("commandTimeoutSeconds", 10))
        self.stop: dict[str, Any] = config.get("stop") or {"method": "command",
                                                            "command": POWER_OFF}
        if self.stop.get("method") not in ("command", "azure-self-delete", "exit"):
            raise ValueError(f"unknown stop method {self.stop.get('method')!r}")
        self.transport, self.run_command, self.clock, self.sleep = transport, run, clock, sleep
        self.monotonic = monotonic or clock
        self.imds, self.arm, self.print, self.hidden = imds_url, arm_url, log, [self.secret]
        self.last_contact = self.monotonic()
        self.busy: bool | None = None
        self.state: tuple[object, ...] | None = None

    def log(self, message: str) -> None:
        for hidden in self.hidden:
            message = message.replace(hidden, "[hidden]")
        stamp = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.print(f"{stamp} provisioner-agent {self.instance_id}: {message}")

    def run(self) -> int:
        """Reports, then heartbeats; returns the exit code once the machine is stopped."""
        ready, delay = False, 1.0
        while True:
            body = self.heartbeat_report() if ready else self.gpu_report()
            reason = self.expired()
            if reason:
                return self.stop_machine(reason)
            status, answer = self.call("heartbeat" if ready else "ready", body)
            if status == 410 or answer.get("stop") is True:
                return self.stop_machine(f"the service says the instance is finished ({status})")
            if status and 200 <= status < 300:
                if not ready:
                    ready = True
                    self.log(f"ready report accepted: {json.dumps(body)}")
                    continue
                self.adopt(answer)
            self.wait(self.heartbeat if ready else delay)
            delay = min(delay * 2, 30.0)

    def expired(self) -> str | None:
        silent = self.monotonic() - self.last_contact
        if silent >= self.deadman:
            return f"dead-man switch: no answer from the service for {silent:.0f} s"
        if self.deadline is not None and self.clock() >= self.deadline:
            return "the lifetime deadline has passed"
        return None

    def wait(self, most: float) -> None:
        """Sleeps, but no later than the dead-man switch or the lifetime is due."""
        due = self.deadman - (self.monotonic() - self.last_contact)
        if self.deadline is not None:
            due = min(due, self.deadline - self.clock())
        self.sleep(max(0.0, min(most, due)))

    def call(self, route: str, body: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
        """POSTs to an agent route: (status, None when unanswered; the answer's object)."""
        headers = {"Authorization": "Agent " + self.secret, "Content-Type": "application/json"}
        try:
            status, payload = self.transport("POST", self.base + route, headers,
                                             json.dumps(body).encode(), 5.0)
        except Exception as error:  # whatever failed, there was no contact: the dead-man decides
            self.log(f"{route}: no answer ({type(error).__name__}: {error})")
            return None, {}
        if not 200 <= status < 300:
            why = {401: "secret refused", 404: "unknown instance"}.get(status, "refused")
            text = first_line(payload.decode("utf-8", "ignore"))
            self.log(f"{route}: HTTP {status}, {why}: {text}")
            return status, {}
        self.last_contact = self.monotonic()
        try:
            answer = json.loads(payload or b"{}")
        except ValueError:
            answer = None
        return status, answer if isinstance(answer, dict) else {}

    def adopt(self, answer: dict[str, Any]) -> None:
        try:
            limits = (seconds(answer.get("heartbeatSeconds", self.heartbeat), "heartbeatSeconds"),
                      seconds(answer.get("deadmanSeconds", self.deadman), "deadmanSeconds"),
                      deadline(answer["lifetimeDeadline"]) if "lifetimeDeadline" in answer
                      else self.deadline)
        except (TypeError, ValueError) as error:
            self.log(f"heartbeat: ignored the answer's limits ({error})")
            return
        state = limits + (answer.get("status"),)
        if state != self.state:
            self.log(f"the service says: {json.dumps(answer)}")
        self.state, (self.heartbeat, self.deadman, self.deadline) = state, limits

    def table(self, argv: list[str], row: Callable[..., Any]) -> list[Any]:
        """nvidia-smi's CSV lines, each made a value by `row`."""
        try:
            code, out, err = self.run_command(argv, self.command_timeout)
        except TimeoutError:
            raise GpuError(f"nvidia-smi timed out after {self.command_timeout:g} s") from None
        except OSError as error:  # above all FileNotFoundError: no nvidia-smi
            raise GpuError(f"nvidia-smi cannot run: {error.strerror or error}") from None
        if code != 0:
            line = first_line(err) or first_line(out)
            raise GpuError(f"nvidia-smi failed (exit code {code}){': ' if line else ''}{line}")
        try:
            return [row(*(cell.strip() for cell in line.split(",")))
                    for line in out.splitlines() if line.strip()]
        except (TypeError, ValueError):
            raise GpuError("unparseable nvidia-smi output: " + first_line(out)) from None

    def gpu_report(self) -> dict[str, Any]:
        try:
            gpus = self.table(READY_QUERY, lambda index, name, memory, driver, ecc: {
                "index": int(index), "name": name, "memoryTotalMib": number(memory),
                "driverVersion": driver, "eccErrors": number(ecc)})
        except GpuError as error:
            self.log(f"GPU check failed: {error}")
            return {"ok": False, "gpus": [], "error": str(error)}
        return {"ok": True, "gpus": gpus, "error": None}

    def heartbeat_report(self) -> dict[str, Any]:
        try:
            gpus = dict(self.table(USE_QUERY, lambda index, uuid, used, memory: (uuid, {
                "index": int(index), "utilizationPercent": number(used),
                "memoryUsedMib": number(memory), "processes": 0})))
        except GpuError as failed:
            self.log(f"GPU query failed: {failed}")
            return {"gpus": [], "healthy": False, "error": str(failed)}
        error: str | None = None
        try:
            for uuid in self.table(APPS_QUERY, lambda uuid, *_: uuid):
                if uuid in gpus:
                    gpus[uuid]["processes"] += 1
        except GpuError as failure:
            error = f"process query: {failure}"
            for gpu in gpus.values():
                gpu["processes"] = None
        report = list(gpus.values())
        busy = any((gpu["utilizationPercent"] or 0) > self.idle_percent or gpu["processes"]
                   for gpu in report)
        if busy != self.busy:
            self.busy = busy
            self.log(f"GPUs {'busy' if busy else 'idle'}: {report}")
        return {"gpus": report, "healthy": error is None, "error": error}

    def stop_machine(self, reason: str) -> int:
        self.log("stopping the machine: " + reason)
        if self.stop["method"] == "exit":
            code = int(self.stop.get("code", 3))
            self.log(f"exiting with code {code}: the local runner ends the machine")
            return code
        if self.stop["method"] == "azure-self-delete":
            if self.azure_self_delete():
                return STOPPED
            self.log("powering off instead: the VM stays allocated and billed until deleted")
            return self.power_off(self.stop.get("fallbackCommand") or POWER_OFF)
        return self.power_off(self.stop.get("command") or POWER_OFF)

    def power_off(self, argv: list[str]) -> int:
        code: int | str
        try:
            code, _, err = self.run_command(list(argv), 30.0)
        except Exception as error:  # nothing is left to try: say so and exit
            code, err = repr(error), ""
        self.log(f"stop command {argv}: {'accepted' if code == 0 else 'failed'} ({code}) "
                 f"{first_line(err)}")
        return STOPPED if code == 0 else STOP_FAILED

    def azure_self_delete(self) -> bool:
        """Deletes this VM through Resource Manager, as the VM's own managed identity."""
        def ask(method: str, url: str, headers: dict[str, str],
                accept: tuple[int, ...] = (200,)) -> str:
            status, body = self.transport(method, url, headers, None, 5.0)
            if status not in accept:
                raise RuntimeError(f"{method} {url.split('?')[0]}: HTTP {status}")
            return body.decode()

        imds, metadata = self.imds + "/metadata/", {"Metadata": "true"}
        for attempt in range(3):
            try:
                token = json.loads(ask("GET", imds + "identity/oauth2/token?api-version=2018-02-01"
                                       "&resource=" + urllib.parse.quote(ARM + "/", safe=""),
                                       metadata))["access_token"]
                self.hidden.append(token)
                vm = ask("GET", imds + "instance/compute/resourceId?api-version=2021-02-01"
                         "&format=text", metadata).strip()
                ask("DELETE", f"{self.arm}{vm}?api-version=2024-07-01",
                    {"Authorization": "Bearer " + token}, (200, 202, 204))
                self.log(f"Azure accepted the deletion of {vm}")
                return True
            except Exception as error:  # a failed self-delete must still end in a power-off
                self.log(f"Azure self-delete attempt {attempt + 1} failed: {error}")
                self.sleep(2.0)
        return False


def http_call(method: str, url: str, headers: dict[str, str], body: bytes | None,
              timeout: float) -> tuple[int, bytes]:
    """One HTTP exchange: (status, body) for any answer; OSError when there is none."""
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    # Azure's IMDS must be reached directly, never through a proxy.
    handlers = [urllib.request.ProxyHandler({})] if url.startswith(IMDS) else []
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def run_command(argv: list[str], timeout: float) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); FileNotFoundError when absent, TimeoutError when slow."""
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        # One stuck in the driver cannot be reaped: abandon it rather than stall the dead-man.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=2)
        raise TimeoutError(argv[0]) from None
    return process.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Instance Provisioner agent")
    parser.add_argument("--config", required=True)
    path = parser.parse_args(argv).config

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        with open(path) as file:
            agent = Agent(json.load(file), http_call, run_command, time.time, time.sleep, log,
                          time.monotonic)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        log(f"provisioner-agent: unusable config {path}: {type(error).__name__}: {error}")
        return BAD_CONFIG
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
