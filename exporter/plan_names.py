"""The one naming scheme for TensorRT plans and timing caches, and its parser.

    model_<precision>.<gpu>.trt<major.minor.patch>[.stripped].plan
    timing.<gpu>.trt<major.minor.patch>.cache

One plan per precision, GPU and TensorRT version (a weight-stripped plan beside a full one).
`-` in a precision becomes `_` (precision names never hold `_`, so the parser restores them).
Shell variables (`${GPU_SLUG}`) may stand for the GPU and the version: build_engines.sh uses the
same functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STRIPPED = "stripped"
_PLAN = re.compile(r"^model_(?P<precision>[a-z0-9_]+)\.(?P<gpu>[a-z0-9-]+)\.trt(?P<version>[0-9]+(?:\.[0-9]+){0,2})"
                   r"(?:\.(?P<variant>stripped))?\.plan$")


def trt_tag(version: str) -> str:
    """'10.13.3.9' -> 'trt10.13.3' (build number dropped); a shell variable is kept as it is."""
    if version.startswith("$"):
        return "trt" + version
    return "trt" + ".".join(version.split(".")[:3])


def plan_name(precision: str, gpu_slug: str, tensorrt_version: str, stripped: bool | str = False) -> str:
    """`stripped` may also be a shell variable holding "" or ".stripped" (build_engines.sh)."""
    variant = f".{STRIPPED}" if stripped is True else (stripped or "")
    return f"model_{precision.replace('-', '_')}.{gpu_slug}.{trt_tag(tensorrt_version)}{variant}.plan"


def timing_cache_name(gpu_slug: str, tensorrt_version: str) -> str:
    return f"timing.{gpu_slug}.{trt_tag(tensorrt_version)}.cache"


@dataclass(frozen=True)
class PlanName:
    precision: str
    gpu: str
    version: str  # major.minor.patch as in the name
    stripped: bool


def parse_plan_name(name: str) -> PlanName | None:
    """The parts of a plan file name written by `plan_name`, or None for any other name."""
    m = _PLAN.match(name)
    if not m:
        return None
    return PlanName(m["precision"].replace("_", "-"), m["gpu"], m["version"], m["variant"] == STRIPPED)
