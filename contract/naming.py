"""Every file name an artifact folder or a collection folder holds: one function or constant per name."""

from __future__ import annotations

import re

MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.md"
BUILD_SCRIPT_NAME = "build_engines.sh"
GATE_INPUTS_NAME = "gate_inputs.npy"
_PLAN = re.compile(r"^model_(?P<precision>[a-z0-9_]+)\.(?P<gpu>[a-z0-9-]+)\.trt(?P<version>[0-9.]+|\$\{TRT_VERSION\})\.plan$")


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
    """'10.3.0.26' -> 'trt10.3.0' (a shell variable such as ${TRT_VERSION} is kept as it is)."""
    return "trt" + (version if version.startswith("$") else ".".join(version.split(".")[:3]))


def plan_name(precision: str, gpu: str, tensorrt_version: str) -> str:
    """model_<precision>.<gpu slug>.trt<version>.plan: one plan per precision, GPU and TensorRT version."""
    return f"model_{precision.replace('-', '_')}.{gpu}.{trt_tag(tensorrt_version)}.plan"


def parse_plan_name(name: str) -> dict | None:
    """{precision, gpu, tensorrt_version} of a plan file name, or None when it is not one of ours."""
    m = _PLAN.match(name)
    if not m:
        return None
    return {"precision": m["precision"].replace("_", "-"), "gpu": m["gpu"], "tensorrt_version": m["version"]}


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
