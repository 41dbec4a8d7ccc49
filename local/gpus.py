"""The emulated machines' GPUs: what `nvidia-smi` on a machine of a catalog type reports (the
fake in local/bin/nvidia-smi reads a machine's GPUs from the JSON file written here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# What nvidia-smi calls the catalog's GPU models, and their memory.
GPUS: dict[str, tuple[str, int]] = {
    "T4": ("Tesla T4", 15360),
    "K80": ("Tesla K80", 11441),
    "V100": ("Tesla V100-SXM2-16GB", 16384),
    "M60": ("Tesla M60", 8129),
    "A10G": ("NVIDIA A10G", 23028),
    "A100": ("NVIDIA A100-SXM4-40GB", 40960),
}
DRIVER = "535.104.05"
FAKE_NVIDIA_SMI_DIR = Path(__file__).resolve().parent / "bin"
STATE_FILE = "gpus.json"


def gpus_of(model: str, count: int) -> list[dict[str, Any]]:
    """The `count` GPUs of a catalog `model`, as the boot report names them."""
    name, memory = GPUS.get(model, (f"NVIDIA {model}", 16384))
    return [
        {"index": n, "name": name, "memoryTotalMib": memory, "driverVersion": DRIVER,
         "eccErrors": 0}
        for n in range(count)
    ]


def write_machine(directory: Path, model: str, count: int) -> Path:
    """A machine's GPU state for the fake nvidia-smi: its GPUs, idle. Edit `utilizationPercent`
    and `processes` in the file to make them busy."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    path.write_text(json.dumps({
        "gpus": gpus_of(model, count), "utilizationPercent": 0, "processes": 0,
    }, indent=2))
    return path
