"""build_engines.sh: the exact trtexec commands for an artifact folder, for targets that ship
trtexec (JetPack) but not our Python package.

Precision lives in the ONNX files (typed fp16, Q/DQ int8 and fp8), so no --fp16/--int8 flag is
ever emitted. TensorRT 11 networks are always strongly typed; 10.12+ needs --stronglyTyped; the
script picks the form from the trtexec it finds. Plans and timing caches are named per GPU and
TensorRT version; fp8 is refused below compute capability 8.9. Each built plan is recorded in the
manifest with `ijepa-export register-engine` (which gates it) where that command exists.
"""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

from ijepa_deploy.contract.atomic import write_atomic
from ijepa_deploy.contract.manifest import Manifest
from ijepa_deploy.contract.naming import BUILD_SCRIPT_NAME as SCRIPT_NAME
from ijepa_deploy.contract.naming import plan_name, timing_cache_name
from ijepa_deploy.contract.precisions import default_plan_precisions


def profile_shapes(manifest: Manifest) -> dict[str, tuple[int, int, int, int]]:
    """min/opt/max input shapes (N, C, H, W) from the manifest's batch and resolution range."""
    c = manifest.architecture.num_channels
    res, batch = manifest.resolution, manifest.batch
    native = tuple(res.native) if res.dynamic else tuple(res.min)
    return {"min": (batch.min, c, *res.min), "opt": (batch.opt, c, *native), "max": (batch.max, c, *res.max)}


def trtexec_command(manifest: Manifest, precision: str, trt_major: int, trt_minor: int = 0,
                    gpu_slug: str = "${GPU_SLUG}", trt_version: str = "${TRT_VERSION}",
                    workspace_mib: int = 4096) -> list[str]:
    """The trtexec argument list that builds `precision`'s plan with TensorRT `trt_major.trt_minor`."""
    if (trt_major, trt_minor) < (10, 12):
        raise ValueError("trtexec before TensorRT 10.12 cannot build strongly typed networks; use TensorRT >= 10.12")
    art = manifest.artifact(precision)
    if not art.tensorrt:
        raise ValueError(f"{precision} is not for TensorRT")
    name = manifest.input_name
    shapes = {k: "x".join(str(d) for d in v) for k, v in profile_shapes(manifest).items()}
    cache = timing_cache_name(gpu_slug, trt_version)
    plan = plan_name(precision, gpu_slug, trt_version)
    cmd = ["trtexec", f"--onnx={art.file}", f"--saveEngine={plan}",
           f"--minShapes={name}:{shapes['min']}", f"--optShapes={name}:{shapes['opt']}",
           f"--maxShapes={name}:{shapes['max']}", f"--memPoolSize=workspace:{workspace_mib}M",
           f"--timingCacheFile={cache}", "--profilingVerbosity=detailed", "--skipInference"]
    if precision == "fp32":
        cmd.append("--noTF32")
    if trt_major == 10:
        cmd.insert(2, "--stronglyTyped")
    return cmd


def _quote(args: list[str]) -> str:
    return " ".join(shlex.quote(a) if "$" not in a else f'"{a}"' for a in args)


def render_script(manifest: Manifest) -> str:
    precisions = [p for p, a in manifest.artifacts.items() if a.tensorrt]
    default = default_plan_precisions(manifest.artifacts)
    lines = [
        "#!/usr/bin/env bash",
        f"# Build TensorRT plans for {manifest.name} on THIS machine's GPU (a plan is tied to the TensorRT",
        "# version and the GPU's compute capability). Precision is in the ONNX files: no precision flags.",
        "# Usage: ./build_engines.sh [" + "|".join(precisions) + " ...]   (default: " + " ".join(default) + ")",
        "# VERSION_COMPATIBLE=1 builds plans that later TensorRT versions can run (slower to load).",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "command -v trtexec >/dev/null || { echo 'trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec)' >&2; exit 1; }",
        "TRT_VERSION=$(trtexec --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n1 | tr -dc '0-9')",
        '[ -n "$TRT_VERSION" ] || { echo "cannot read the TensorRT version from trtexec" >&2; exit 1; }',
        "major=$((TRT_VERSION / 10000)); minor=$(((TRT_VERSION / 100) % 100)); patch=$((TRT_VERSION % 100))",
        "TRT_VERSION=$major.$minor.$patch",
        'if [ "$major" -lt 10 ] || { [ "$major" -eq 10 ] && [ "$minor" -lt 12 ]; }; then',
        '  echo "TensorRT $TRT_VERSION found; strongly typed builds need >= 10.12" >&2; exit 1',
        "fi",
        "GPU_SLUG=$({ nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true; } | head -n1 | "
        "tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//;s/-$//')",
        'GPU_SLUG=${GPU_SLUG:-jetson}',
        "CC=$({ nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null || true; } | head -n1 | tr -d ' ')",
        'extra=(); register=()',
        'if [ "${VERSION_COMPATIBLE:-0}" = 1 ]; then extra+=(--versionCompatible); register+=(--version-compatible); fi',
        f'[ "$#" -gt 0 ] || set -- {" ".join(default)}',
        'for p in "$@"; do',
        '  case "$p" in',
    ]
    for p in precisions:
        art = manifest.artifact(p)
        guard = []
        if art.min_compute_capability:
            need = art.min_compute_capability
            guard = [f'      if [ -n "$CC" ] && ! awk -v a="$CC" -v b="{need}" \'BEGIN{{exit !(a+0 >= b+0)}}\'; then',
                     f'        echo "{p} needs compute capability >= {need}; this GPU has $CC" >&2; exit 1; fi']
        v10 = _quote(trtexec_command(manifest, p, 10, 12))
        v11 = _quote(trtexec_command(manifest, p, 11))
        plan = plan_name(p, "${GPU_SLUG}", "${TRT_VERSION}")
        lines += [f"    {p})", *guard,
                  f'      if [ "$major" -ge 11 ]; then {v11} "${{extra[@]}}"',
                  f'      else {v10} "${{extra[@]}}"; fi',
                  f'      plan="{plan}" ;;']
    lines += ['    *) echo "unknown precision $p (have: ' + " ".join(precisions) + ')" >&2; exit 1 ;;',
              "  esac",
              '  if command -v ijepa-export >/dev/null; then',
              '    ijepa-export register-engine --artifacts . "$plan" --precision "$p" "${register[@]}"',
              "  else",
              '    echo "built $plan; record it with: ijepa-export register-engine --artifacts $(pwd) $plan" >&2',
              "  fi",
              "done", ""]
    return "\n".join(lines)


def write_build_script(folder: Path, manifest: Manifest) -> Path:
    """Export step: write build_engines.sh into the artifact folder."""
    path = write_atomic(Path(folder) / SCRIPT_NAME, render_script(manifest))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
