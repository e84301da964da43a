"""What a TensorRT build asks for, decided once for both builders (Python API and trtexec).

Pure functions, testable without TensorRT: the version floor (strongly typed networks exist since
TensorRT 10.0; JetPack 6 ships 10.3), the builder flags per precision and version (TF32 cleared
only for fp32 plans: a quantized or fp16 plan's float layers are typed by the ONNX file), the
requests that cannot work (a hardware-compatible fp8 plan, a stripped version-compatible plan),
and the optimization-profile shapes from the manifest and the batch buckets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ijepa_deploy.contract.manifest import Manifest
from ijepa_deploy.runtime.backends.tensorrt_compat import version_tuple
from ijepa_deploy.runtime.backends.tensorrt_profiles import Bucket, split_batch

MIN_TENSORRT = (10, 0)
FLOOR_REASON = ("strongly typed networks exist since TensorRT 10.0 (JetPack 6 ships 10.3); weak typing and "
                "calibrators are gone in 11")
AMPERE = (8, 0)


def version_floor_problem(version: str) -> str | None:
    """Why this TensorRT cannot build our files, or None."""
    if version_tuple(version)[:2] < MIN_TENSORRT:
        return f"TensorRT {version} is too old: {FLOOR_REASON}; use TensorRT >= 10.0"
    return None


@dataclass
class BuildSettings:
    profiles: list[dict]  # per optimization profile: min/opt/max (N, C, H, W)
    workspace_gb: float = 4.0
    opt_level: int = 3
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compatible: bool = False
    tf32: bool = False  # allow TF32 in an fp32 plan (other precisions never clear it)
    strip_weights: bool = False
    allow_float_gemms: bool = False  # warn, not refuse, when quantized GEMMs did not run quantized
    device: int = 0
    buckets: list[Bucket] = field(default_factory=list)


@dataclass(frozen=True)
class BuildChoices:
    """The builder configuration, in the terms of both builders."""

    strongly_typed: bool  # the network flag (Python API, every version)
    trtexec_strongly_typed: bool  # trtexec needs --stronglyTyped before 11 (always typed from 11)
    clear_tf32: bool
    version_compatible: bool
    hardware_level: str | None  # "ampere_plus"
    strip_weights: bool


def build_choices(precision: str, tensorrt_version: str, settings: BuildSettings) -> BuildChoices:
    """The one place that decides the flags: both builders read it."""
    major = version_tuple(tensorrt_version)[0] if not tensorrt_version.startswith("$") else 10
    return BuildChoices(strongly_typed=True, trtexec_strongly_typed=major < 11,
                        clear_tf32=precision == "fp32" and not settings.tf32,
                        version_compatible=settings.version_compatible,
                        hardware_level="ampere_plus" if settings.hardware_compatible else None,
                        strip_weights=settings.strip_weights)


def trtexec_flags(choices: BuildChoices) -> list[str]:
    """The trtexec options for `choices` (all parsed by trtexec 10.3 through 11.x)."""
    flags = ["--stronglyTyped"] if choices.trtexec_strongly_typed else []
    flags += ["--noTF32"] if choices.clear_tf32 else []
    flags += ["--versionCompatible"] if choices.version_compatible else []
    flags += ["--hardwareCompatibilityLevel=ampere+"] if choices.hardware_level == "ampere_plus" else []
    flags += ["--stripWeights"] if choices.strip_weights else []
    return flags


def request_problem(precision: str, min_compute_capability: str | None, settings: BuildSettings) -> str | None:
    """Why this build request cannot give a working plan, or None."""
    if settings.hardware_compatible and min_compute_capability and \
            version_tuple(min_compute_capability) > AMPERE:
        return (f"{precision} needs compute capability >= {min_compute_capability}; a hardware-compatible plan "
                "holds only kernels every Ampere-or-newer GPU runs: build it without --hardware-compatible")
    if settings.strip_weights and settings.version_compatible:
        return ("a version-compatible plan runs on its embedded lean runtime, which cannot refit: "
                "--strip-weights and --version-compatible do not combine")
    return None


def profile_shapes(manifest: Manifest, buckets: list[Bucket] | None = None,
                   resolution: tuple | None = None) -> list[dict[str, tuple[int, ...]]]:
    """min/opt/max input shapes (N, C, H, W) per optimization profile: the manifest's batch range
    (or each bucket) over its resolution range (or `resolution` = (min HxW, max HxW))."""
    c = manifest.architecture.num_channels
    res, batch = manifest.resolution, manifest.batch
    lo, hi = (tuple(res.min), tuple(res.max)) if resolution is None else resolution
    native = tuple(res.native) if res.dynamic else tuple(res.min)
    native = tuple(min(max(n, a), b) for n, a, b in zip(native, lo, hi))
    buckets = buckets or [Bucket(batch.min, batch.opt, batch.max)]
    return [{"min": (b.min, c, *lo), "opt": (b.opt, c, *native), "max": (b.max, c, *hi)} for b in buckets]


def profile_records(input_name: str, shapes: list[dict]) -> list[dict]:
    """The manifest's `profiles` entries."""
    return [{"input": input_name, **{k: list(v) for k, v in s.items()}} for s in shapes]


def gate_problem(profiles: list[dict], channels: int, height: int, width: int) -> str | None:
    """Why the held-out images (N, channels, height, width) cannot be run on these profiles, or None.
    Batches are split and padded to fit (see `gate_chunks`); the resolution must be inside one."""
    for p in profiles:
        if all(lo <= s <= hi for s, lo, hi in zip((channels, height, width), p["min"][1:], p["max"][1:])):
            return None
    ranges = "; ".join(f"{'x'.join(map(str, p['min'][2:]))}..{'x'.join(map(str, p['max'][2:]))}" for p in profiles)
    return (f"the held-out images are {height}x{width}, outside every profile's resolution range ({ranges}): "
            f"the plan could not be gated; widen --min/--max-resolution to include {height}x{width}")


def gate_chunks(count: int, profiles: list[dict]) -> list[tuple[int, int]]:
    """(start, stop) batches for `count` gate images: never above the plan's largest profile
    (the backend pads a batch below a profile's minimum)."""
    return split_batch(count, max(int(p["max"][0]) for p in profiles))
