"""Every file name an artifact folder or a collection folder holds: one function or constant per name."""

from __future__ import annotations

import re
from dataclasses import dataclass

MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.md"
BUILD_SCRIPT_NAME = "build_engines.sh"
GATE_INPUTS_NAME = "gate_inputs.npy"
STRIPPED = "stripped"
_PLAN = re.compile(r"^model_(?P<precision>[a-z0-9_]+)\.(?P<gpu>[a-z0-9-]+)\.trt(?P<version>[0-9]+(?:\.[0-9]+){0,2})"
                   r"(?:\.(?P<variant>stripped))?\.plan$")


def onnx_name(precision: str) -> str:
    """model_<precision>.onnx (dashes become underscores: model_int8_cpu.onnx)."""
    return f"model_{precision.replace('-', '_')}.onnx"


def data_name(onnx_file: str) -> str:
    """The external-data file beside an ONNX file."""
    return onnx_file + ".data"


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (the plan file's GPU tag)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def trt_tag(version: str) -> str:
    """'10.13.3.9' -> 'trt10.13.3' (build number dropped); a shell variable (${TRT_VERSION}) is kept as it is."""
    if version.startswith("$"):
        return "trt" + version
    return "trt" + ".".join(version.split(".")[:3])


def plan_name(precision: str, gpu: str, tensorrt_version: str, stripped: bool | str = False) -> str:
    """model_<precision>.<gpu slug>.trt<major.minor.patch>[.stripped].plan: one plan per precision, GPU and
    TensorRT version (a weight-stripped plan beside a full one). `-` in a precision becomes `_` (precision
    names never hold `_`). `stripped` may also be a shell variable holding "" or ".stripped" (build_engines.sh)."""
    variant = f".{STRIPPED}" if stripped is True else (stripped or "")
    return f"model_{precision.replace('-', '_')}.{gpu}.{trt_tag(tensorrt_version)}{variant}.plan"


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


def timing_cache_name(gpu: str, tensorrt_version: str) -> str:
    return f"timing.{gpu}.{trt_tag(tensorrt_version)}.cache"


# ---------------------------------------------------------------- collection folders (ijepa-embed --output-dir)
RUN_NAME = "run.json"
INPUTS_NAME = "inputs.parquet"
INDEX_NAME = "index.faiss"
INDEX_RECORD_NAME = "index.json"
SHARD_DIGITS = 6


def shard_stem(k: int) -> str:
    return f"shard-{k:0{SHARD_DIGITS}d}"


def shard_names(k: int) -> tuple[str, str, str]:
    """(embeddings .npy, per-input metadata .parquet, commit record .json) of shard k."""
    stem = shard_stem(k)
    return f"{stem}.npy", f"{stem}.parquet", f"{stem}.json"
