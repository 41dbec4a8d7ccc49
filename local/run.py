"""`make run`: the API on 127.0.0.1:$PORT against in-process AWS emulation and a local Azure
Resource Manager, the emulated AWS endpoint on 127.0.0.1:$MOTO_PORT for inspection, and the
`reaper` tick on a timer."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from chalice.config import Config
from chalice.local import LocalDevServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from chalicelib import bootstrap, metrics
from chalicelib.bootstrap import Container
from chalicelib.domain.states import LIVE_STATUSES
from local import console
from local.agents import LocalAgents
from local.emulator import REGION, emulated_aws
from local.gpus import gpu_dir
from local.server import LISTEN_BACKLOG, local_server

HOST = "127.0.0.1"
class PortInUse(SystemExit):
    """A port a variable names is taken: exit status 1 with a sentence naming the variable."""

    def __init__(self, variable: str, port: int, error: OSError) -> None:
        why = "is in use by another program" if error.errno == errno.EADDRINUSE else (
            f"cannot be listened on ({error.strerror})"
        )
        super().__init__(
            f"make run: port {port} on {HOST} {why}. Stop that program or choose another "
            f"port for {variable}, e.g. {variable}={free_port()} make run"
        )  # SystemExit with a message: printed on stderr, exit status 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def listening_socket(variable: str, port: int) -> socket.socket:
    """A socket bound to HOST:port and listening (port 0: any free one), or PortInUse."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as error:
        sock.close()
        raise PortInUse(variable, port, error) from None
    return sock


def api_server(app_module: Any, port: int) -> LocalDevServer:
    """The API's local server (local/server.py); PortInUse if PORT is taken."""
    config = Config.create(chalice_stage="local", app_name=app_module.app.app_name)
    try:
        return local_server(app_module.app, config, HOST, port)
    except OSError as error:
        raise PortInUse("PORT", port, error) from None


def moto_server(sock: socket.socket) -> BaseWSGIServer:
    """The emulated AWS endpoint (what moto's ThreadedMotoServer serves) on `sock`."""
    return make_server(
        HOST, sock.getsockname()[1], DomainDispatcherApplication(create_backend_app),
        threaded=True, request_handler=MotoRequestHandler, fd=sock.fileno(),
    )


def integer_setting(variable: str, default: str) -> int:
    raw = os.environ.get(variable, default)
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"make run: {variable} must be an integer, got {raw!r}") from None


def reaper_timer(app_module: Any, interval: float, stop: threading.Event) -> None:
    """Runs the scheduled `reaper` function every `interval` seconds, as EventBridge would.
    What a tick changes is on the console already (transitions, actions); its summary and
    its metrics only with LOG_LEVEL=DEBUG."""
    log = logging.getLogger(console.TICKS)
    while not stop.wait(interval):
        event = {
            "version": "0", "id": "local", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012",
            "time": datetime.now(UTC).isoformat(), "region": REGION,
            "resources": [], "detail": {},
        }
        try:
            report = app_module.reaper(event, None)
        except Exception:
            log.exception("tick failed")
            continue
        log.debug("tick: %s", report)


def live_instances() -> Counter[str]:
    repository = bootstrap.container().repository
    return Counter({status.value: sum(1 for _ in repository.live(status))
                    for status in LIVE_STATUSES})


def discarded(live: Counter[str]) -> str:
    total = sum(live.values())
    if not total:
        return "make run: stopped; no live instance to discard (local state lives in memory)."
    counts = ", ".join(f"{n} {status}" for status, n in live.items() if n)
    return (
        f"make run: stopped; discarding {total} live instance{'s' if total != 1 else ''} "
        f"({counts}): local state lives in memory and is gone with the process."
    )


def main() -> None:
    console.configure(os.environ.get("LOG_LEVEL", "INFO"))
    metrics.send_lines_to(logging.getLogger(console.METRICS).debug)
    port = integer_setting("PORT", "8000")
    moto_port = integer_setting("MOTO_PORT", "5000")
    arm_port = integer_setting("ARM_PORT", "0")  # 0: any free port
    tick_seconds = float(os.environ.get("REAPER_INTERVAL_SECONDS", "60"))
    poll_seconds = integer_setting("WORKFLOW_POLL_SECONDS", "1")
    max_checks = integer_setting("WORKFLOW_MAX_CHECKS", "60")
    heartbeat_seconds = integer_setting("AGENT_HEARTBEAT_SECONDS", "15")

    # Every port is claimed before the emulation starts: a busy one ends the run at once.
    import app

    server = api_server(app, port)
    moto_socket = listening_socket("MOTO_PORT", moto_port)
    arm_socket = listening_socket("ARM_PORT", arm_port)

    emulation = emulated_aws(
        poll_seconds, max_checks, instant_retries=False, arm_fd=arm_socket.fileno(),
        finish_workflows=False,
    )
    with emulation as aws, TemporaryDirectory(prefix="provisioner-machines-") as machines:
        # The machines' agents call this server, and stop a machine by exiting (LocalAgents
        # then terminates it); AGENT_HEARTBEAT_SECONDS etc. still apply.
        agent_policy = replace(
            aws.settings.agent, callback_url=f"http://{HOST}:{port}", stop_method="exit",
            heartbeat_seconds=heartbeat_seconds,
        )
        settings = replace(
            aws.settings, agent=agent_policy,
            allow_previous_generation=os.environ.get("ALLOW_PREVIOUS_GENERATION", "").lower()
            in ("1", "true", "yes"),
        )
        bootstrap.use(Container(settings=settings, azure_connection=aws.azure))
        agents = LocalAgents(Path(machines), aws.arm_fake)
        gpu_dir().mkdir(parents=True, exist_ok=True)
        aws.router.before_step = agents.before_step
        inspection = moto_server(moto_socket)
        threading.Thread(target=inspection.serve_forever, daemon=True, name="moto").start()

        stop = threading.Event()
        threading.Thread(
            target=reaper_timer, args=(app, tick_seconds, stop), daemon=True, name="reaper"
        ).start()

        def shut_down(*_: Any) -> None:
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, shut_down)
        signal.signal(signal.SIGINT, shut_down)
        print(
            banner(port, moto_port, tick_seconds, aws.settings.table_name, aws.arm.url,
                   str(gpu_dir())),
            flush=True,
        )
        try:
            server.server.serve_forever()
        finally:
            stop.set()
            live = live_instances()
            agents.stop_all()
            inspection.shutdown()
            print(discarded(live), flush=True)


def banner(
    port: int, moto_port: int, tick_seconds: float, table: str, arm_url: str, gpus: str
) -> str:
    api = f"http://{HOST}:{port}"
    # The command line's default URL is port 8000's; another port goes in PROVISIONER_API.
    cli = ".venv/bin/provisioner" if port == 8000 else (
        f"PROVISIONER_API={api} .venv/bin/provisioner")
    return f"""
Instance Provisioner (local stage) is listening on {api}
  AWS emulation (moto) for inspection: http://{HOST}:{moto_port}
  Azure Resource Manager (local fake, real Azure SDK): {arm_url} (ARM_PORT)
  reaper tick every {tick_seconds:g} s (REAPER_INTERVAL_SECONDS)
  each machine runs its agent; make its GPUs busy: echo '{{"utilization": 80}}' > {gpus}/<id>.json

Try:
  {cli} launch g4dn.xlarge --wait
  curl -s -X POST {api}/api/instances -H 'Authorization: Bearer dev:alice' \\
       -H 'Content-Type: application/json' -d '{{"instanceType": "g4dn.xlarge"}}'
  curl -s -X POST {api}/api/instances -H 'Authorization: Bearer dev:alice' \\
       -H 'Content-Type: application/json' -d '{{"instanceType": "Standard_NC4as_T4_v3"}}'
  curl -s {api}/api/instances -H 'Authorization: Bearer dev:alice'
  aws --endpoint-url http://{HOST}:{moto_port} dynamodb scan --table-name {table}
Stop with Ctrl-C.
"""


if __name__ == "__main__":
    main()
