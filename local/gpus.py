"""The emulated machines' GPUs. Each machine's agent runs with the fake nvidia-smi of
local/bin on its PATH, told by its environment which GPUs the machine has (the catalog's);
what they are doing is up to the user: `<LOCAL_GPU_DIR>/<instance id>.json`, or
`default.json` for machines without their own, holding `{"utilization": 0-100,
"healthy": true|false}` (docs/agent.md#locally)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# What nvidia-smi calls the catalog's GPU models, and their memory in MiB.
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
DEFAULT_GPU_DIR = Path(__file__).resolve().parent.parent / ".local" / "gpu"


def gpus_of(model: str, count: int) -> list[dict[str, Any]]:
    """The `count` GPUs of a catalog `model`, as the agent's boot report names them."""
    name, memory = GPUS.get(model, (f"NVIDIA {model}", 16384))
    return [
        {"index": n, "name": name, "memoryTotalMib": memory, "driverVersion": DRIVER,
         "eccErrors": 0}
        for n in range(count)
    ]


def gpu_dir() -> Path:
    return Path(os.environ.get("LOCAL_GPU_DIR") or DEFAULT_GPU_DIR)


def fake_gpu_environment(instance_id: str, model: str, count: int) -> dict[str, str]:
    """The environment that makes local/bin/nvidia-smi a machine of `count` x `model`."""
    name, memory = GPUS.get(model, (f"NVIDIA {model}", 16384))
    return {
        "PATH": f"{FAKE_NVIDIA_SMI_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        "LOCAL_GPU_DIR": str(gpu_dir()),
        "PROVISIONER_INSTANCE_ID": instance_id,
        "FAKE_GPU_NAME": name,
        "FAKE_GPU_MEMORY_MIB": str(memory),
        "FAKE_GPU_COUNT": str(count),
        "FAKE_GPU_DRIVER": DRIVER,
    }
