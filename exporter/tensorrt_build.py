"""TensorRT plans from the typed ONNX artifacts: one strongly typed code path for 10.12+ and 11.

Precision comes from the ONNX file (typed fp16, Q/DQ int8 and fp8), so no precision flag is set;
fp32 plans are built with TF32 off unless asked for. The network is parsed with
`parse_from_file` (external data); one optimization profile covers the manifest's batch range and,
for dynamic artifacts, its resolution range. The timing cache is per GPU and TensorRT version,
every cache call is checked, and the cache is written atomically. The plan is inspected from
memory (with host code allowed for version-compatible plans), written atomically, gated against
its source ONNX under ONNX Runtime on the held-out images stored with the artifacts, and recorded
per precision, GPU and TensorRT version: a second GPU's plan is added beside the first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.atomic import write_atomic
from ijepa_deploy.contract.integrity import confined, sha256_file, verify_file
from ijepa_deploy.contract.manifest import Engine, Manifest, Validation
from ijepa_deploy.contract.naming import (BUILD_SCRIPT_NAME, REPORT_NAME, gpu_slug, parse_plan_name, plan_name,
                                          timing_cache_name)
from ijepa_deploy.contract.precisions import default_plan_precisions
from ijepa_deploy.contract.records import load_record
from ijepa_deploy.runtime.backends.tensorrt_backend import TensorRTBackend, local_environment, tensorrt_unavailable_reason

from . import report
from .errors import EngineBuildError
from .gates import EvalSet, gate_images, gate_shapes, random_cases, require
from .precisions import get as export_precision
from .progress import stage
from .trtexec_script import profile_shapes

log = logging.getLogger(__name__)

ATTENTION_KERNEL = re.compile(r"mha|fmha|flash|attention|_sdpa|myelin.*softmax", re.IGNORECASE)


@dataclass
class BuildSettings:
    shapes: dict  # min/opt/max (N, C, H, W)
    workspace_gb: float = 4.0
    opt_level: int = 3
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compatible: bool = False
    tf32: bool = False
    device: int = 0


def missing_tensorrt_message(folder: Path) -> str | None:
    reason = tensorrt_unavailable_reason()
    if reason is None:
        return None
    return (f"cannot build TensorRT engines here: {reason}. On the target GPU run "
            f"`ijepa-export build-engine --artifacts {folder}`, or {folder / BUILD_SCRIPT_NAME} where only trtexec exists "
            "(JetPack)")


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
                log.warning("  [TensorRT] %s", msg)

    return Logger()


def _load_timing_cache(config, path: Path | None):
    data = path.read_bytes() if path and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None:
        raise EngineBuildError(f"TensorRT could not create a timing cache{f' from {path}' if data else ''}; "
                               "delete the cache file to start a new one")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EngineBuildError(f"the timing cache {path} was made on another GPU or TensorRT version; delete it")
    return cache


def build_plan(onnx_path: Path, plan_path: Path, settings: BuildSettings, input_name: str = "pixel_values",
               precision: str = "fp32") -> dict:
    """Build, inspect and save one plan; return the fields of its manifest record (no validation)."""
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
    if not settings.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; fp32 plans stay fp32 (the fp32 gate)
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if settings.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    _load_timing_cache(config, settings.timing_cache)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, settings.shapes["min"], settings.shapes["opt"], settings.shapes["max"])
    config.add_optimization_profile(profile)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {plan_path.name}: {'; '.join(logger.errors)[:400] or 'see log'}")
    seconds = time.perf_counter() - start
    data = bytes(serialized)
    inspection = inspect_plan(trt, logger, data, settings.version_compatible)
    write_atomic(plan_path, data)
    if settings.timing_cache:
        cache = config.get_timing_cache()
        if cache is None:
            log.warning("  warning: TensorRT returned no timing cache to save")
        else:
            write_atomic(settings.timing_cache, bytes(cache.serialize()))
    return {"file": plan_path.name, "sha256": sha256_file(plan_path), "bytes": plan_path.stat().st_size,
            "build_seconds": round(seconds, 1), "precision": precision,
            "profiles": [{"input": input_name, **{k: list(v) for k, v in settings.shapes.items()}}],
            "version_compatible": settings.version_compatible,
            "hardware_compatibility": "ampere_plus" if settings.hardware_compatible else None,
            "optimization_level": settings.opt_level, "tf32": settings.tf32,
            "timing_cache": settings.timing_cache.name if settings.timing_cache else None, **inspection}


def inspect_plan(trt, logger, data: bytes, version_compatible: bool) -> dict:
    """Layer count and the fused attention kernels TensorRT chose (by layer or tactic name: with
    TensorRT 10+ the transformer is compiled by Myelin and layer names are generated)."""
    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineBuildError("TensorRT built a plan it cannot deserialize; see the TensorRT log")
    inspector = engine.create_engine_inspector()
    try:
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except (ValueError, TypeError) as exc:
        return {"layers": engine.num_layers, "attention_kernels": None, "inspection_error": str(exc)[:200]}
    layers = [layer if isinstance(layer, dict) else {"Name": layer} for layer in info.get("Layers", [])]
    kernels = sorted({str(layer.get(key, "")) for layer in layers for key in ("Name", "TacticName", "Metadata")
                      if ATTENTION_KERNEL.search(str(layer.get(key, "")))})
    return {"layers": len(layers), "attention_kernels": kernels[:20]}


def gate_inputs(folder: Path, manifest: Manifest) -> tuple[list[np.ndarray] | None, str]:
    """The held-out images stored with the artifacts (preprocessed), batched within the profile."""
    record = manifest.gate_inputs
    if not record:
        return None, "no held-out images were stored with the artifacts"
    path = manifest.path(record.path)
    verify_file(path, record.sha256, record.bytes)
    pixels = np.load(path, allow_pickle=False).astype(np.float32)
    step = manifest.batch.max
    return [pixels[i:i + step] for i in range(0, len(pixels), step)], f"{len(pixels)} held-out images"


def validate_plan(folder: Path, manifest: Manifest, precision: str, plan: Path, entry: Engine,
                  device: int = 0) -> dict:
    """Compare the plan with its source ONNX under ONNX Runtime, with the precision's gate."""
    from ijepa_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    gate = export_precision(precision).gate
    onnx_path = manifest.verify(precision)
    reference_backend = OnnxRuntimeBackend(onnx_path)
    plan_backend = TensorRTBackend(plan, entry, device=device)
    label = f"{plan.name} vs {onnx_path.name} under ONNX Runtime"
    try:
        batches, described = gate_inputs(folder, manifest)
        if batches is None:
            if precision != "fp32":
                raise EngineBuildError(f"cannot gate the {precision} plan: {described} (re-export with --eval-images)")
            shapes = [tuple(s[i] for i in (0, 2, 3)) for s in (entry.profiles[0]["min"], entry.profiles[0]["max"])]
            cases = random_cases(shapes)
            record = gate_shapes(plan_backend, cases, [reference_backend.run(c.pixel_values) for c in cases], gate,
                                 label)
        else:
            names = ["last_hidden_state", "embedding"]
            ref = [reference_backend.run(b, names) for b in batches]
            eval_set = EvalSet([f"image {i}" for i in range(sum(len(b) for b in batches))], batches,
                               {n: np.concatenate([r[n] for r in ref]) for n in names})
            got = [plan_backend.run(b, names) for b in batches]
            record = require(gate_images({n: np.concatenate([g[n] for g in got]) for n in names}, eval_set, gate, label))
    finally:
        plan_backend.close()
    record["reference"] = f"ONNX Runtime on {onnx_path.name}"
    return load_record(Validation, record)


def check_buildable(manifest: Manifest, precision: str, compute_capability: str) -> None:
    art = manifest.artifact(precision)
    if not art.tensorrt:
        raise EngineBuildError(f"{precision} is not for TensorRT ({art.description or 'CPU only'}); build "
                               f"{' or '.join(p for p, a in manifest.artifacts.items() if a.tensorrt)} instead")
    if art.min_compute_capability:
        need = tuple(int(x) for x in art.min_compute_capability.split("."))
        have = tuple(int(x) for x in compute_capability.split("."))
        if have < need:
            raise EngineBuildError(f"{precision} needs compute capability >= {art.min_compute_capability} (Ada, Hopper, "
                                   f"Blackwell); this GPU has {compute_capability}: build fp16 or int8 instead")


def build_engines(folder: Path, manifest: Manifest, precisions: list[str],
                  settings: BuildSettings) -> tuple[Manifest, list[Engine]]:
    """Build, gate and record plans for `precisions` on this GPU; returns the manifest with them and the new records."""
    env = local_environment(settings.device)
    slug = gpu_slug(env["gpu_name"])
    for precision in precisions:
        check_buildable(manifest, precision, env["compute_capability"])
    settings.timing_cache = settings.timing_cache or folder / timing_cache_name(slug, env["tensorrt_version"])
    built = []
    for precision in precisions:
        onnx_path = manifest.verify(precision)
        plan = folder / plan_name(precision, slug, env["tensorrt_version"])
        with stage(f"TensorRT {env['tensorrt_version']}: build {precision} plan on {env['gpu_name']}"):
            fields = build_plan(onnx_path, plan, settings, manifest.input_name, precision)
        record = load_record(Engine, {**fields, **env})
        try:
            with stage(f"gate the {precision} plan vs ONNX Runtime"):
                record = dataclasses.replace(record, validation=validate_plan(folder, manifest, precision, plan, record,
                                                                               settings.device))
        except BaseException:
            plan.unlink(missing_ok=True)
            raise
        manifest = manifest.with_engine(record)
        built.append(record)
    return manifest, built


def engine_step(precisions: tuple[str, ...]):
    """Export step for `--engine`: build plans now, or say why they were skipped."""
    def step(folder: Path, manifest: Manifest) -> Manifest:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            log.warning("  TensorRT engines skipped: %s; build them on the GPU with "
                        "`ijepa-export build-engine --artifacts <folder>` or build_engines.sh", reason)
            return manifest
        wanted = [p for p in default_plan_precisions(manifest.artifacts) if p in precisions]
        settings = BuildSettings(shapes=profile_shapes(manifest))
        return build_engines(folder, manifest, wanted, settings)[0]

    return step


def build_engine_cli(folder: Path, precisions: list[str] | None, *, batch=(None, None, None), resolution=(None, None),
                     workspace_gb=4.0, opt_level=3, device=0, tf32=False, version_compatible=False,
                     hardware_compatible=False) -> list[Path]:
    """`ijepa-export build-engine`: build on this GPU and record in the manifest; returns plan paths."""
    manifest = Manifest.load(folder)
    message = missing_tensorrt_message(folder)
    if message:
        raise EngineBuildError(message)
    wanted = precisions or default_plan_precisions(manifest.artifacts)
    shapes = profile_shapes(manifest)
    for key, value in zip(("min", "opt", "max"), batch):
        if value:
            shapes[key] = (value, *shapes[key][1:])
    for key, value in zip(("min", "max"), resolution):
        if value:
            if not manifest.dynamic_resolution:
                raise EngineBuildError(f"{folder} was exported at a fixed resolution; --{key}-resolution needs a "
                                       "dynamic export")
            shapes[key] = (*shapes[key][:2], *value)
    if not shapes["min"][0] <= shapes["opt"][0] <= shapes["max"][0]:
        raise EngineBuildError(f"profile batch sizes must satisfy min <= opt <= max, got "
                               f"{shapes['min'][0]}, {shapes['opt'][0]}, {shapes['max'][0]}")
    settings = BuildSettings(shapes=shapes, workspace_gb=workspace_gb, opt_level=opt_level, tf32=tf32, device=device,
                             version_compatible=version_compatible, hardware_compatible=hardware_compatible)
    manifest, built = build_engines(folder, manifest, wanted, settings)
    manifest.save(folder)
    write_atomic(folder / REPORT_NAME, report.render(manifest))
    return [folder / e.file for e in built]


def register_engine(folder: Path, plan: Path, *, precision: str | None = None, device: int = 0,
                    version_compatible: bool = False) -> Path:
    """Record a plan built elsewhere (trtexec): read its GPU, TensorRT version and profile on this
    GPU, gate it against its source ONNX under ONNX Runtime, and add it to the manifest."""
    manifest = Manifest.load(folder)
    if plan.resolve().parent != folder.resolve():
        raise EngineBuildError(f"{plan} must be inside the artifact folder {folder} (build it there, or move it there)")
    plan = confined(folder, plan.name, "plan")
    if not plan.is_file():
        raise EngineBuildError(f"plan not found: {plan}")
    reason = tensorrt_unavailable_reason()
    if reason:
        raise EngineBuildError(f"cannot register {plan.name} here: {reason}; run register-engine on the GPU that built it")
    if precision is None:
        parsed = parse_plan_name(plan.name)
        if not parsed or parsed["precision"] not in manifest.artifacts:
            raise EngineBuildError(f"cannot tell the precision of {plan.name}; pass --precision")
        precision = parsed["precision"]
    env = local_environment(device)
    check_buildable(manifest, precision, env["compute_capability"])
    import tensorrt as trt

    logger = _make_logger(trt)
    data = plan.read_bytes()
    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} on {env['gpu_name']} cannot deserialize {plan.name}: it was "
                               "built with another TensorRT version or GPU (or pass --version-compatible)")
    name = manifest.input_name
    lo, opt, hi = (list(s) for s in engine.get_tensor_profile_shape(name, 0))
    inspection = inspect_plan(trt, logger, data, version_compatible)
    del engine
    record = load_record(Engine, dict(precision=precision, file=plan.name, sha256=sha256_file(plan),
                                      bytes=plan.stat().st_size, profiles=[{"input": name, "min": lo, "opt": opt, "max": hi}],
                                      version_compatible=version_compatible, hardware_compatibility=None, **env,
                                      **inspection))
    with stage(f"gate {plan.name} vs ONNX Runtime"):
        record = dataclasses.replace(record, validation=validate_plan(folder, manifest, precision, plan, record, device))
    manifest = manifest.with_engine(record)
    manifest.save(folder)
    write_atomic(folder / REPORT_NAME, report.render(manifest))
    return plan
