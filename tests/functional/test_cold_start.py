"""Importing app.py (a Lambda cold start) loads no cloud SDK and builds no client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
