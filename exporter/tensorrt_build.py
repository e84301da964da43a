"""TensorRT plans from the typed ONNX artifacts: one strongly typed code path for 10.0+ and 11.

Precision comes from the ONNX file (typed fp16, Q/DQ int8 and fp8 with an fp16 float region), so
no precision flag is set; the flags both builders use come from `tensorrt_flags.build_choices`
(TF32 cleared for fp32 plans only). The network is parsed with `parse_from_file` (external data);
one optimization profile per batch bucket (`--profiles 1-4,8-32`) over the resolution range. The
timing cache is per GPU and TensorRT version, checked, written atomically. The plan is inspected
from memory: its precision report (the type every GEMM runs in, whether attention fused) is
recorded, and a quantized plan whose quantized GEMMs run in float is refused. Then the plan is
written atomically, gated against its source ONNX under ONNX Runtime on the held-out images
stored with the artifacts (batched within its profiles), and recorded per precision, GPU and
TensorRT version. Weight-stripped plans (`--strip-weights`) are refitted from the ONNX at load.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.atomic import write_atomic
from ijepa_deploy.contract.integrity import sha256_file, verify_file
from ijepa_deploy.contract.manifest import Engine, Manifest, Validation
from ijepa_deploy.contract.naming import BUILD_SCRIPT_NAME as SCRIPT_NAME
from ijepa_deploy.contract.naming import REPORT_NAME, gpu_slug, plan_name, timing_cache_name
from ijepa_deploy.contract.precisions import default_plan_precisions
from ijepa_deploy.contract.errors import BackendError
from ijepa_deploy.contract.records import load_record
from ijepa_deploy.runtime.backends.tensorrt_backend import (TensorRTBackend, deserialize_plan, hardware_level_name,
                                                            local_environment, tensorrt_unavailable_reason)
from ijepa_deploy.runtime.backends.tensorrt_compat import version_tuple
from ijepa_deploy.runtime.backends.tensorrt_profiles import parse_profiles

from . import report
from .errors import EngineBuildError
from .precisions import get as export_precision
from .progress import stage
from .tensorrt_flags import (BuildChoices, BuildSettings, build_choices, gate_chunks, gate_problem, profile_records,
                             profile_shapes, request_problem, version_floor_problem)
from .tensorrt_report import onnx_gemms, precision_report, report_problems
from .gates import EvalSet, gate_images, gate_shapes, random_cases, require

log = logging.getLogger(__name__)


def missing_tensorrt_message(folder: Path) -> str | None:
    reason = tensorrt_unavailable_reason()
    if reason is None:
        return None
    return (f"cannot build TensorRT engines here: {reason}. On the target GPU run "
            f"`ijepa-export build-engine --artifacts {folder}`, or {folder / SCRIPT_NAME} where only trtexec exists "
            "(JetPack, Triton containers)")


def _strongly_typed_flags(trt) -> int:
    problem = version_floor_problem(trt.__version__)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if problem or flag is None:
        raise EngineBuildError(problem or f"TensorRT {trt.__version__} has no strongly typed networks")
    return 1 << int(flag)


def make_logger(trt):
    """A TensorRT logger that keeps errors for the failure message and logs warnings."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(msg)
            if severity <= trt.ILogger.Severity.WARNING:
                log.warning("[TensorRT] %s", msg)

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


def _configure(trt, builder, config, settings: BuildSettings, choices: BuildChoices, input_name: str) -> None:
    """Apply the builder choices (the Python half of `build_choices`) and one profile per bucket."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * (1 << 30)))
    config.builder_optimization_level = settings.opt_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the precision report needs layer details
    if choices.clear_tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; fp32 plans stay fp32 (the fp32 gate)
    if choices.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if choices.hardware_level == "ampere_plus":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if choices.strip_weights:
        if not hasattr(trt.BuilderFlag, "STRIP_PLAN"):
            raise EngineBuildError(f"TensorRT {trt.__version__} cannot build weight-stripped plans")
        config.set_flag(trt.BuilderFlag.STRIP_PLAN)
        config.set_flag(trt.BuilderFlag.REFIT_IDENTICAL)  # refitted from the same ONNX (kREFIT can drop biases)
    _load_timing_cache(config, settings.timing_cache)
    for shapes in settings.profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)


def build_plan(onnx_path: Path, plan_path: Path, settings: BuildSettings, input_name: str = "pixel_values",
               precision: str = "fp32") -> dict:
    """Build, inspect and save one plan; return the fields of its manifest record (no validation)."""
    import tensorrt as trt

    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path.name}: {errors[:400]}")
    config = builder.create_builder_config()
    choices = build_choices(precision, trt.__version__, settings)
    _configure(trt, builder, config, settings, choices, input_name)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {plan_path.name}: {'; '.join(logger.errors)[:400] or 'see log'}")
    seconds = time.perf_counter() - start
    data = bytes(serialized)
    inspection = inspect_plan(trt, logger, data, settings.version_compatible, onnx_path)
    write_atomic(plan_path, data)
    if settings.timing_cache:
        cache = config.get_timing_cache()
        if cache is None:
            log.warning("TensorRT returned no timing cache to save")
        else:
            write_atomic(settings.timing_cache, bytes(cache.serialize()))
    return {"file": plan_path.name, "sha256": sha256_file(plan_path), "bytes": plan_path.stat().st_size,
            "build_seconds": round(seconds, 1), "precision": precision,
            "profiles": profile_records(input_name, settings.profiles), "version_compatible": settings.version_compatible,
            "hardware_compatibility": choices.hardware_level, "optimization_level": settings.opt_level,
            "tf32": not choices.clear_tf32, "stripped": settings.strip_weights,
            "timing_cache": settings.timing_cache.name if settings.timing_cache else None, **inspection}


def deserialize(trt, logger, data: bytes, version_compatible: bool, what: str = "the plan"):
    """(runtime, engine) for plan bytes; the runtime must outlive the engine."""
    try:
        return deserialize_plan(trt, logger, data, version_compatible, what, "built with another TensorRT version or "
                                "GPU (or version compatible: pass --version-compatible); see its log")
    except BackendError as exc:
        raise EngineBuildError(str(exc)) from None


def inspect_engine(trt, engine, onnx_path: Path) -> dict:
    """Layer count, hardware level and the precision report (what every GEMM runs in, whether
    attention fused), from the engine inspector; a stripped plan is inspected without weights."""
    fields = {"hardware_compatibility": hardware_level_name(trt, engine), "layers": engine.num_layers}
    gemms, blocks = onnx_gemms(onnx_path)
    inspector = engine.create_engine_inspector()
    try:
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except (ValueError, TypeError) as exc:  # a quantized plan without a report is refused (check_report)
        return {**fields, "inspection_error": str(exc)[:200],
                "precision_report": {"available": False, "reason": f"inspector JSON unreadable: {str(exc)[:100]}",
                                     "quantized_gemms": sum(gemms.values())}}
    found = precision_report(info, gemms, blocks)
    return {**fields, "layers": found.get("layers", engine.num_layers), "precision_report": found,
            "attention_kernels": found.get("attention_kernels")}


def inspect_plan(trt, logger, data: bytes, version_compatible: bool, onnx_path: Path) -> dict:
    _runtime, engine = deserialize(trt, logger, data, version_compatible)
    return inspect_engine(trt, engine, onnx_path)


def check_report(record: Engine, allow_float_gemms: bool) -> None:
    """Refuse a plan whose quantized GEMMs did not run quantized (or warn, when allowed)."""
    refusals, warnings = report_problems(record.precision_report or {"available": False, "reason": "no report"})
    for message in warnings + (refusals if allow_float_gemms else []):
        log.warning("%s", message)
    if refusals and not allow_float_gemms:
        raise EngineBuildError(f"{refusals[0]}; rebuild, or pass --allow-float-gemms to keep the plan anyway")


def gate_pixels(manifest: Manifest) -> tuple[np.ndarray | None, str]:
    """The held-out images stored with the artifacts (preprocessed)."""
    record = manifest.gate_inputs
    if not record:
        return None, "no held-out images were stored with the artifacts"
    path = manifest.path(record.path)
    verify_file(path, record.sha256, record.bytes)
    return np.load(path, allow_pickle=False).astype(np.float32), f"{record.images} held-out images"


def validate_plan(manifest: Manifest, precision: str, plan: Path, entry: Engine, onnx_path: Path,
                  device: int = 0) -> Validation:
    """Compare the plan with its source ONNX (`onnx_path`, verified by the caller) under ONNX Runtime, with
    the precision's gate, on batches cut to the plan's own profiles."""
    from ijepa_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    gate = export_precision(precision).gate
    reference_backend = OnnxRuntimeBackend(onnx_path)
    label = f"{plan.name} vs {onnx_path.name} under ONNX Runtime"
    pixels, described = gate_pixels(manifest)
    if pixels is None and precision != "fp32":
        raise EngineBuildError(f"cannot gate the {precision} plan: {described} (re-export with --eval-images)")
    plan_backend = TensorRTBackend(plan, entry, device=device)
    try:
        if pixels is None:
            shapes = [tuple(p[k][i] for i in (0, 2, 3)) for p in entry.profiles for k in ("min", "max")]
            cases = random_cases(sorted(set(shapes)))
            record = gate_shapes(plan_backend, cases, [reference_backend.run(c.pixel_values) for c in cases], gate,
                                 label)
        else:
            names = ["last_hidden_state", "embedding"]
            batches = [pixels[a:b] for a, b in gate_chunks(len(pixels), entry.profiles)]
            ref = [reference_backend.run(b, names) for b in batches]
            eval_set = EvalSet([f"image {i}" for i in range(len(pixels))], batches,
                               {n: np.concatenate([r[n] for r in ref]) for n in names})
            got = [plan_backend.run(b, names) for b in batches]
            record = require(gate_images({n: np.concatenate([g[n] for g in got]) for n in names}, eval_set, gate, label))
    finally:
        plan_backend.close()
    record["reference"] = f"ONNX Runtime on {onnx_path.name}"
    return load_record(Validation, record)


def check_buildable(manifest: Manifest, precision: str, compute_capability: str,
                    settings: BuildSettings | None = None) -> None:
    art = manifest.artifact(precision)
    if not art.tensorrt:
        raise EngineBuildError(f"{precision} is not for TensorRT ({art.description or 'CPU only'}); build "
                               f"{' or '.join(p for p, a in manifest.artifacts.items() if a.tensorrt)} instead")
    if art.min_compute_capability:
        if version_tuple(compute_capability) < version_tuple(art.min_compute_capability):
            raise EngineBuildError(f"{precision} needs compute capability >= {art.min_compute_capability} (Ada, Hopper, "
                                   f"Blackwell); this GPU has {compute_capability}: build fp16 or int8 instead")
    problem = settings and request_problem(precision, art.min_compute_capability, settings)
    if problem:
        raise EngineBuildError(problem)


def _check_gateable(manifest: Manifest, precision: str, settings: BuildSettings) -> None:
    """Before a long build: the held-out images must fit the profiles (resolution inside one)."""
    if manifest.gate_inputs is None:
        return
    pre = manifest.preprocessing
    problem = gate_problem(settings.profiles, manifest.architecture.num_channels, pre.height, pre.width)
    if problem:
        raise EngineBuildError(f"{precision}: {problem}")


def build_engines(folder: Path, manifest: Manifest, precisions: list[str],
                  settings: BuildSettings) -> tuple[Manifest, list[Engine]]:
    """Build, check, gate and record plans for `precisions` on this GPU; the manifest with them, and the new records."""
    env = local_environment(settings.device)
    problem = version_floor_problem(env["tensorrt_version"])
    if problem:
        raise EngineBuildError(problem)
    slug = gpu_slug(env["gpu_name"])
    for precision in precisions:
        check_buildable(manifest, precision, env["compute_capability"], settings)
        _check_gateable(manifest, precision, settings)
    settings.timing_cache = settings.timing_cache or folder / timing_cache_name(slug, env["tensorrt_version"])
    built = []
    for precision in precisions:
        onnx_path = manifest.verify(precision)
        plan = folder / plan_name(precision, slug, env["tensorrt_version"], settings.strip_weights)
        with stage(f"TensorRT {env['tensorrt_version']}: build {precision} plan on {env['gpu_name']}"):
            fields = build_plan(onnx_path, plan, settings, manifest.input_name, precision)
        record = load_record(Engine, {**env, **fields})
        try:
            check_report(record, settings.allow_float_gemms)
            with stage(f"gate the {precision} plan vs ONNX Runtime"):
                record = dataclasses.replace(record, validation=validate_plan(manifest, precision, plan, record, onnx_path,
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
        return build_engines(folder, manifest, wanted, BuildSettings(profiles=profile_shapes(manifest)))[0]

    return step


def settings_for(manifest: Manifest, *, profiles: str | None = None, batch=(None, None, None),
                 resolution=(None, None), **options) -> BuildSettings:
    """BuildSettings from the build-engine options: `--profiles` buckets, or the manifest's batch
    range with --min/--opt/--max-batch; --min/--max-resolution narrow or widen the resolution."""
    if profiles and any(batch):
        raise EngineBuildError("--profiles replaces --min/--opt/--max-batch: give one or the other")
    res = manifest.resolution
    lo, hi = resolution
    if (lo or hi) and not manifest.dynamic_resolution:
        raise EngineBuildError(f"{manifest.name} was exported at a fixed resolution; --min/--max-resolution needs a "
                               "dynamic export")
    span = (tuple(lo or res.min), tuple(hi or res.max))
    if any(a > b for a, b in zip(*span)):
        raise EngineBuildError(f"--min-resolution {span[0]} exceeds --max-resolution {span[1]}")
    if profiles:
        try:
            buckets = parse_profiles(profiles)
        except ValueError as exc:
            raise EngineBuildError(str(exc)) from None
        return BuildSettings(profiles=profile_shapes(manifest, buckets, span), buckets=buckets, **options)
    shapes = profile_shapes(manifest, None, span)[0]
    for key, value in zip(("min", "opt", "max"), batch):
        if value:
            shapes[key] = (value, *shapes[key][1:])
    if not shapes["min"][0] <= shapes["opt"][0] <= shapes["max"][0]:
        raise EngineBuildError(f"profile batch sizes must satisfy min <= opt <= max, got "
                               f"{shapes['min'][0]}, {shapes['opt'][0]}, {shapes['max'][0]}")
    return BuildSettings(profiles=[shapes], **options)


def build_engine_cli(folder: Path, precisions: list[str] | None, *, profiles: str | None = None,
                     batch=(None, None, None), resolution=(None, None), **options) -> list[Path]:
    """`ijepa-export build-engine`: build on this GPU and record in the manifest; returns plan paths.
    `options`: BuildSettings fields (workspace_gb, opt_level, device, tf32, version_compatible,
    hardware_compatible, strip_weights, allow_float_gemms)."""
    manifest = Manifest.load(folder)
    wanted = precisions or default_plan_precisions(manifest.artifacts)
    settings = settings_for(manifest, profiles=profiles, batch=batch, resolution=resolution, **options)
    for precision in wanted:  # what can be refused without TensorRT is refused first
        art = manifest.artifact(precision)
        problem = request_problem(precision, art.min_compute_capability, settings)
        if problem:
            raise EngineBuildError(problem)
        _check_gateable(manifest, precision, settings)
    message = missing_tensorrt_message(folder)
    if message:
        raise EngineBuildError(message)
    manifest, built = build_engines(folder, manifest, wanted, settings)
    manifest.save(folder)
    write_atomic(folder / REPORT_NAME, report.render(manifest))
    return [folder / e.file for e in built]
