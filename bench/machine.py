"""The machine a benchmark ran on, and the process's memory, as the results record them."""

from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_fp16")


def machine() -> dict:
    cpu, flags = "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = None
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    from ijepa_deploy.exporter.manifest_builder import tool_versions

    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_flags": " ".join(f for f in FLAGS if f in flags),
            "memory_gb": round(mem, 1), "gpu": gpu, "os": platform.platform(), **tool_versions()}


def peak_rss_mb() -> int:
    """VmHWM: unlike ru_maxrss it does not carry the high-water mark of the parent that forked us."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def rss_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024)
    return 0
