"""`make run`: the API on 127.0.0.1:$PORT against in-process AWS emulation and a local Azure
Resource Manager, the emulated AWS endpoint on 127.0.0.1:$MOTO_PORT for inspection, and the
`reaper` tick on a timer."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from chalice.config import Config
from chalice.local import create_local_server
from moto.server import ThreadedMotoServer

from chalicelib import bootstrap
from chalicelib.bootstrap import Container
from local.agents import LocalAgents
from local.emulator import REGION, emulated_aws

HOST = "127.0.0.1"


def reaper_timer(app_module: Any, interval: float, stop: threading.Event) -> None:
    """Runs the scheduled `reaper` function every `interval` seconds, as EventBridge would."""
    log = logging.getLogger("reaper")
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
        if any(report[k] for k in ("terminatedIdle", "confirmedTerminated", "markedStuck")):
            log.info("tick: %s", report)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    port = int(os.environ.get("PORT", "8000"))
    moto_port = int(os.environ.get("MOTO_PORT", "5000"))
    tick_seconds = float(os.environ.get("REAPER_INTERVAL_SECONDS", "60"))
    poll_seconds = int(os.environ.get("WORKFLOW_POLL_SECONDS", "1"))
    max_checks = int(os.environ.get("WORKFLOW_MAX_CHECKS", "60"))
    arm_port = int(os.environ.get("ARM_PORT", "0"))  # 0: any free port

    emulation = emulated_aws(poll_seconds, max_checks, instant_retries=False, arm_port=arm_port)
    with emulation as aws, TemporaryDirectory(prefix="provisioner-machines-") as machines:
        # The machines' agents call this server, and stop a machine by exiting (LocalAgents
        # then terminates it); AGENT_HEARTBEAT_SECONDS etc. still apply.
        agent_policy = replace(
            aws.settings.agent, callback_url=f"http://{HOST}:{port}", stop_method="exit",
            heartbeat_seconds=int(os.environ.get("AGENT_HEARTBEAT_SECONDS", "15")),
        )
        settings = replace(aws.settings, agent=agent_policy)
        bootstrap.use(Container(settings=settings, azure_connection=aws.azure))
        agents = LocalAgents(Path(machines), aws.arm_fake)
        aws.router.before_step = agents.before_step
        moto_server = ThreadedMotoServer(ip_address=HOST, port=moto_port, verbose=False)
        moto_server.start()

        import app

        stop = threading.Event()
        threading.Thread(
            target=reaper_timer, args=(app, tick_seconds, stop), daemon=True, name="reaper"
        ).start()
        config = Config.create(chalice_stage="local", app_name=app.app.app_name)
        server = create_local_server(app.app, config, HOST, port)

        def shut_down(*_: Any) -> None:
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, shut_down)
        signal.signal(signal.SIGINT, shut_down)
        print(
            banner(port, moto_port, tick_seconds, aws.settings.table_name, aws.arm.url,
                   machines),
            flush=True,
        )
        try:
            server.serve_forever()
        finally:
            stop.set()
            agents.stop_all()
            moto_server.stop()


def banner(
    port: int, moto_port: int, tick_seconds: float, table: str, arm_url: str, machines: str
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
  each machine's agent runs as a process; its GPUs: {machines}/<instance id>/gpus.json

Try:
  {cli} launch g4dn.xlarge --wait
  curl -s -X POST {api}/api/instances -H 'Authorization: Bearer dev:alice' \\
       -H 'Content-Type: application/json' -d '{{"instanceType": "g4dn.xlarge"}}'
  curl -s -X POST {api}/api/instances -H 'Authorization: Bearer dev:alice' \\
       -H 'Content-Type: application/json' -d '{{"instanceType": "Standard_NC6"}}'
  curl -s {api}/api/instances -H 'Authorization: Bearer dev:alice'
  aws --endpoint-url http://{HOST}:{moto_port} dynamodb scan --table-name {table}
Stop with Ctrl-C.
"""


if __name__ == "__main__":
    main()
