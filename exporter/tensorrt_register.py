"""`ijepa-export register-engine`: record a plan built elsewhere (trtexec, build_engines.sh).

Everything the manifest needs is read from the plan itself on this GPU: its optimization
profiles, its hardware-compatibility level, its precision report (engine inspector); the GPU,
compute capability, CPU architecture and TensorRT version come from this machine, which must be
the one that runs it. The plan is refused when its quantized GEMMs run in float, then gated
against its source ONNX under ONNX Runtime, then recorded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ijepa_deploy.contract.atomic import write_atomic
from ijepa_deploy.contract.integrity import confined, sha256_file
from ijepa_deploy.contract.manifest import Engine, Manifest
from ijepa_deploy.contract.naming import REPORT_NAME, parse_plan_name
from ijepa_deploy.contract.records import load_record
from ijepa_deploy.runtime.backends.tensorrt_backend import local_environment, plan_profiles, tensorrt_unavailable_reason

from . import report
from .errors import EngineBuildError
from .progress import stage
from .tensorrt_build import check_buildable, check_report, deserialize, inspect_engine, make_logger, validate_plan
from .tensorrt_flags import BuildSettings, profile_records, request_problem, version_floor_problem


def _plan_in(folder: Path, plan: Path) -> Path:
    if plan.resolve().parent != folder.resolve():
        raise EngineBuildError(f"{plan} must be inside the artifact folder {folder} (build it there, or move it there)")
    plan = confined(folder, plan.name, "plan")
    if not plan.is_file():
        raise EngineBuildError(f"plan not found: {plan}")
    return plan


def register_engine(folder: Path, plan: Path, *, precision: str | None = None, device: int = 0,
                    version_compatible: bool = False, stripped: bool | None = None,
                    allow_float_gemms: bool = False) -> Path:
    """Inspect, check, gate and record `plan` (inside `folder`) on this GPU; returns its path."""
    manifest = Manifest.load(folder)
    plan = _plan_in(folder, plan)
    reason = tensorrt_unavailable_reason()
    if reason:
        raise EngineBuildError(f"cannot register {plan.name} here: {reason}; run register-engine on the GPU that built it")
    parsed = parse_plan_name(plan.name)
    if precision is None:
        if parsed is None or parsed.precision not in manifest.artifacts:
            raise EngineBuildError(f"cannot tell the precision of {plan.name}; pass --precision")
        precision = parsed.precision
    stripped = bool(parsed and parsed.stripped) if stripped is None else stripped
    env = local_environment(device)
    problem = version_floor_problem(env["tensorrt_version"])
    if problem:
        raise EngineBuildError(problem)
    check_buildable(manifest, precision, env["compute_capability"])
    import tensorrt as trt

    logger = make_logger(trt)
    _runtime, engine = deserialize(trt, logger, plan.read_bytes(), version_compatible,
                                   f"{plan.name} on {env['gpu_name']}")
    shapes = plan_profiles(engine, manifest.input_name)
    onnx_path = manifest.verify(precision)
    inspection = inspect_engine(trt, engine, onnx_path)
    del engine, _runtime
    settings = BuildSettings(profiles=shapes, version_compatible=version_compatible, strip_weights=stripped,
                             hardware_compatible=inspection["hardware_compatibility"] == "ampere_plus")
    problem = request_problem(precision, manifest.artifact(precision).min_compute_capability, settings)
    if problem:
        raise EngineBuildError(f"{plan.name}: {problem}")
    record = load_record(Engine, dict(
        precision=precision, file=plan.name, sha256=sha256_file(plan), bytes=plan.stat().st_size,
        profiles=profile_records(manifest.input_name, shapes), version_compatible=version_compatible,
        stripped=stripped, **env, **inspection))
    check_report(record, allow_float_gemms)
    with stage(f"gate {plan.name} vs ONNX Runtime"):
        record = dataclasses.replace(record, validation=validate_plan(manifest, precision, plan, record, onnx_path, device))
    manifest = manifest.with_engine(record)
    manifest.save(folder)
    write_atomic(folder / REPORT_NAME, report.render(manifest))
    return plan
