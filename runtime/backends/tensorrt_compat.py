"""Which recorded TensorRT plan this machine can run: pure rules over manifest records.

A plan runs only with the exact TensorRT build that made it (all four version parts) unless it was
built version compatible (then any later version of the same major, or of the next major TensorRT
documents: 8 -> 10, 10 -> 11); only on the compute capability it was built for unless it was built
hardware compatible (Ampere or newer); and never on another CPU architecture (an x86_64 plan
does not load on an aarch64 Jetson or Grace host, whatever the GPU).
"""

from __future__ import annotations

import platform
import re
from typing import TYPE_CHECKING

from .base import BackendError

if TYPE_CHECKING:
    from ijepa_deploy.contract.manifest import Engine

# Version-compatible plans also run on these later majors (TensorRT's support matrix).
CROSS_MAJOR = {(10, 11), (8, 10)}
ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def cpu_arch(machine: str | None = None) -> str:
    """This machine's CPU architecture, normalized: 'x86_64' or 'aarch64' (others as reported)."""
    name = (machine or platform.machine() or "unknown").lower()
    return ARCH_ALIASES.get(name, name)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", str(text)))


def _field(entry, key: str, default=None):
    return entry.get(key, default) if isinstance(entry, dict) else getattr(entry, key, default)


def version_problem(entry: "Engine | dict", here: str) -> str | None:
    built_text = _field(entry, "tensorrt_version")
    built, local = version_tuple(built_text), version_tuple(here)
    if _field(entry, "version_compatible"):
        same_major = built[:1] == local[:1] or (built[0], local[0]) in CROSS_MAJOR
        if same_major and local >= built:
            return None
        return f"a version-compatible plan runs on TensorRT {built_text} or a later supported version, not {here}"
    if built == local:
        return None
    return f"a plan runs only with the exact TensorRT build that made it ({built_text}, not {here})"


def hardware_problem(entry: "Engine | dict", here_cc: str) -> str | None:
    built, local = version_tuple(_field(entry, "compute_capability")), version_tuple(here_cc)
    if _field(entry, "hardware_compatibility") == "ampere_plus":
        return None if local >= (8, 0) else "a hardware-compatible plan needs an Ampere or newer GPU"
    return None if built == local else "a plan runs only on the compute capability it was built for"


def arch_problem(entry: "Engine | dict", here_arch: str | None) -> str | None:
    built = _field(entry, "cpu_arch")
    if built and here_arch and built != here_arch:
        return f"a plan built on {built} does not load on {here_arch}"
    return None


def engine_compat_problem(entry: "Engine | dict", local: dict) -> str | None:
    """Why this machine cannot run the plan `entry` describes, or None."""
    reasons = [r for r in (version_problem(entry, local["tensorrt_version"]),
                           hardware_problem(entry, local["compute_capability"]),
                           arch_problem(entry, local.get("cpu_arch"))) if r]
    if not reasons:
        return None
    sm_built = "".join(map(str, version_tuple(_field(entry, "compute_capability"))))
    sm_here = "".join(map(str, version_tuple(local["compute_capability"])))
    arch = f", {_field(entry, 'cpu_arch')}" if _field(entry, "cpu_arch") else ""
    here_arch = f", {local['cpu_arch']}" if local.get("cpu_arch") else ""
    return (f"{_field(entry, 'file', 'engine')} was built with TensorRT {_field(entry, 'tensorrt_version')} for "
            f"sm_{sm_built} ({_field(entry, 'gpu_name', '?')}{arch}); this machine has TensorRT "
            f"{local['tensorrt_version']} on sm_{sm_here} ({local.get('gpu_name', '?')}{here_arch}): "
            + "; ".join(reasons))


def check_engine_compat(entry: "Engine | dict", local: dict, folder="ARTIFACTS") -> None:
    """Refuse, with one line, a plan this machine cannot run."""
    problem = engine_compat_problem(entry, local)
    if problem:
        raise BackendError(f"{problem}; rebuild with `ijepa-export build-engine --artifacts {folder}`")


def rank_usable(engines: list, local: dict) -> list:
    """The plans this machine can run, best first: same GPU, same TensorRT, full (not stripped)."""
    usable = [e for e in engines if engine_compat_problem(e, local) is None]
    return sorted(usable, key=lambda e: (_field(e, "gpu_name") != local.get("gpu_name"),
                                         _field(e, "tensorrt_version") != local["tensorrt_version"],
                                         bool(_field(e, "stripped"))))
