"""TensorRT plans from the typed ONNX artifacts: one strongly typed code path for 10.12+ and 11.

Precision comes from the ONNX file (typed fp16, Q/DQ int8), so no precision flag is set. The
network is parsed with `parse_from_file` (external data), one optimization profile covers the
manifest's batch range and, for dynamic artifacts, its resolution range; the timing cache is
loaded and saved; profiling verbosity is DETAILED so the engine inspector can tell whether
attention fused. Each plan is then checked against its source ONNX under ONNX Runtime.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from ijepa_deploy.runtime.backends.base import BackendError
from ijepa_deploy.runtime.backends.tensorrt_backend import (TensorRTBackend, gpu_slug, local_environment,
                                                            tensorrt_unavailable_reason)
from ijepa_deploy.runtime.manifest import Manifest

from . import report
from .progress import say, stage
from .trtexec_script import SCRIPT_NAME, plan_name, profile_shapes
from .validation import GATES, cosine_rows


class EngineBuildError(RuntimeError):
    """TensorRT could not build or validate a plan."""


@dataclass
class BuildSettings:
    shapes: dict  # min/opt/max (N, C, H, W)
    workspace_gb: float = 4.0
    opt_level: int = 3
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compatible: bool = False


def missing_tensorrt_message(folder: Path) -> str | None:
    reason = tensorrt_unavailable_reason()
    if reason is None:
        return None
    return (f"cannot build TensorRT engines here: {reason}. On the target GPU run "
            f"`ijepa-export build-engine --artifacts {folder}`, or {folder / SCRIPT_NAME} where only trtexec exists (JetPack)")


def _strongly_typed_flags(trt) -> int:
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} has no strongly typed networks; use TensorRT >= 10.12")
    return 1 << int(flag)


def _make_logger(trt):
    """A TensorRT logger that keeps errors for the failure message and prints warnings."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(msg)
            if severity <= trt.ILogger.Severity.WARNING:
                say(f"  [TensorRT] {msg}")

    return Logger()


def build_plan(onnx_path: Path, plan_path: Path, settings: BuildSettings, input_name: str = "pixel_values") -> dict:
    """Build and save one plan; return its manifest record (without validation)."""
    import tensorrt as trt

    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path.name}: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * (1 << 30)))
    config.builder_optimization_level = settings.opt_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if settings.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    cache_bytes = settings.timing_cache.read_bytes() if settings.timing_cache and settings.timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, settings.shapes["min"], settings.shapes["opt"], settings.shapes["max"])
    config.add_optimization_profile(profile)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {plan_path.name}: {'; '.join(logger.errors)[:400] or 'see log'}")
    seconds = time.perf_counter() - start
    tmp = plan_path.with_suffix(".plan.partial")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, plan_path)
    if settings.timing_cache:
        settings.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"file": plan_path.name, "bytes": plan_path.stat().st_size, "build_seconds": round(seconds, 1),
            "profiles": [{"input": input_name, **{k: list(v) for k, v in settings.shapes.items()}}],
            "version_compatible": settings.version_compatible,
            "hardware_compatibility": "ampere_plus" if settings.hardware_compatible else None,
            "optimization_level": settings.opt_level, **_inspect(trt, logger, serialized)}


def _inspect(trt, logger, serialized) -> dict:
    """Layer count and whether attention fused: no standalone Softmax layer survives fusion."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    layers = [layer if isinstance(layer, dict) else {"Name": layer} for layer in info.get("Layers", [])]
    names = [str(layer.get("Name", "")) for layer in layers]
    standalone_softmax = [n for n in names if n.endswith("attn.Softmax")]
    return {"layers": len(names), "attention_fused": not standalone_softmax}


def validate_plan(folder: Path, manifest: Manifest, precision: str, cases: list[np.ndarray]) -> dict:
    """Compare the plan with its source ONNX under ONNX Runtime, with the precision's gate."""
    from ijepa_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    gate = GATES[precision]
    onnx_backend = OnnxRuntimeBackend(folder / manifest.artifact(precision)["file"])
    trt_backend = TensorRTBackend(folder, manifest, precision)
    checks = []
    try:
        for pixels in cases:
            ref, got = onnx_backend.run(pixels), trt_backend.run(pixels)
            cos = float(cosine_rows(got["embedding"], ref["embedding"]).min())
            checks.append({"batch": int(pixels.shape[0]), "height": int(pixels.shape[2]), "width": int(pixels.shape[3]),
                           "inputs": "random-uniform[-1,1]", "min_cosine": cos,
                           "max_abs": float(np.abs(got["last_hidden_state"] - ref["last_hidden_state"]).max()),
                           "passed": cos >= gate.min_cosine})
    finally:
        trt_backend.close()
    record = {"passed": all(c["passed"] for c in checks), "reference": f"ONNX Runtime on {manifest.artifact(precision)['file']}",
              "gate": {"min_cosine": gate.min_cosine, "max_abs": None}, "checks": checks}
    if not record["passed"]:
        bad = next(c for c in checks if not c["passed"])
        raise EngineBuildError(f"{precision} plan failed its gate vs ONNX Runtime: cosine {bad['min_cosine']:.6f} < "
                               f"{gate.min_cosine} at batch {bad['batch']}")
    return record


def build_engines(folder: Path, manifest: Manifest, precisions: list[str], settings: BuildSettings) -> dict:
    """Build, record and validate plans for `precisions`; returns the new manifest.engines entries."""
    env = local_environment()
    slug = gpu_slug(env["gpu_name"])
    rng = np.random.default_rng(0)
    lo, hi = settings.shapes["min"], settings.shapes["max"]
    opt = settings.shapes["opt"]
    cases = [rng.uniform(-1, 1, shape).astype(np.float32) for shape in {tuple(lo), tuple(opt), (hi[0], *opt[1:])}]
    entries = {}
    for precision in precisions:
        manifest.artifact(precision)
        with stage(f"TensorRT {env['tensorrt_version']}: build {precision} plan on {env['gpu_name']}"):
            entry = build_plan(folder / manifest.artifact(precision)["file"], folder / plan_name(precision, slug), settings)
        entry.update({"precision": precision, **env})
        manifest.engines[precision] = entry
        with stage(f"validate {precision} plan vs ONNX Runtime"):
            entry["validation"] = validate_plan(folder, manifest, precision, cases)
        entries[precision] = entry
    return entries


def engine_step(precisions: tuple[str, ...]):
    """Export step for `--engine`: build plans now, or record why they were skipped."""
    wanted = [p for p in precisions if p in ("fp16", "int8")] or ["fp32"]

    def step(folder: Path, manifest: Manifest) -> None:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            for p in wanted:
                manifest.engines[p] = {"skipped": reason}
            say(f"  TensorRT engines skipped: {reason}")
            return
        settings = BuildSettings(shapes=profile_shapes(manifest), timing_cache=folder / "timing.cache")
        build_engines(folder, manifest, wanted, settings)

    return step


def _hw(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


@click.command("build-engine", epilog="""
\b
Examples:
  ijepa-export build-engine --artifacts engines/vith14_1k --precision fp16,int8
  ijepa-export build-engine --artifacts engines/vith14_1k --max-batch 32 --opt-batch 8 --workspace 8
""")
@click.option("--artifacts", required=True, type=click.Path(file_okay=False), help="Artifact folder from ijepa-export.")
@click.option("--precision", help="Comma list (default: every exported precision except fp32).")
@click.option("--min-batch", type=int, help="Profile minimum batch (default: manifest).")
@click.option("--opt-batch", type=int, help="Profile optimal batch (default: manifest).")
@click.option("--max-batch", type=int, help="Profile maximum batch (default: manifest).")
@click.option("--min-resolution", help="Profile minimum HxW for dynamic artifacts, e.g. 112x112.")
@click.option("--max-resolution", help="Profile maximum HxW for dynamic artifacts, e.g. 448x448.")
@click.option("--workspace", default=4.0, show_default=True, help="Builder workspace in GB.")
@click.option("--opt-level", type=click.IntRange(0, 5), default=3, show_default=True, help="Builder optimization level.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Timing cache file (default: ARTIFACTS/timing.cache).")
@click.option("--version-compatible", is_flag=True, help="Plan runs on later TensorRT releases of the same major.")
@click.option("--hardware-compatible", is_flag=True, help="Plan runs on any Ampere or newer GPU (slower).")
@click.option("--debug", is_flag=True)
def build_engine_command(artifacts, precision, min_batch, opt_batch, max_batch, min_resolution, max_resolution,
                         workspace, opt_level, timing_cache, version_compatible, hardware_compatible, debug):
    """Build TensorRT plans for an artifact folder on this machine's GPU."""
    from .cli import run_cli

    def body():
        folder = Path(artifacts)
        manifest = Manifest.load(folder)
        message = missing_tensorrt_message(folder)
        if message:
            raise BackendError(message)
        wanted = [p.strip() for p in precision.split(",")] if precision else [
            p for p in manifest.artifacts if p in ("fp16", "int8")] or ["fp32"]
        if "int8-cpu" in wanted:
            raise BackendError("int8-cpu is ONNX Runtime's CPU form (UINT8 activations), which TensorRT rejects; "
                               "build the int8 artifact instead")
        shapes = profile_shapes(manifest)
        for key, value in (("min", min_batch), ("opt", opt_batch), ("max", max_batch)):
            if value:
                shapes[key] = (value, *shapes[key][1:])
        for key, value in (("min", _hw(min_resolution)), ("max", _hw(max_resolution))):
            if value:
                if not manifest.dynamic_resolution:
                    raise BackendError(f"{folder} was exported at a fixed resolution; --{key}-resolution needs a "
                                       "dynamic export")
                shapes[key] = (*shapes[key][:2], *value)
        settings = BuildSettings(shapes=shapes, workspace_gb=workspace, opt_level=opt_level,
                                 timing_cache=Path(timing_cache) if timing_cache else folder / "timing.cache",
                                 version_compatible=version_compatible, hardware_compatible=hardware_compatible)
        build_engines(folder, manifest, wanted, settings)
        manifest.save(folder)
        (folder / "report.md").write_text(report.render(manifest))
        for p in wanted:
            click.echo(str(folder / manifest.engines[p]["file"]))

    run_cli(body, debug)
