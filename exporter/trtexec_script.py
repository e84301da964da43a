"""build_engines.sh: the exact trtexec commands for an artifact folder, for targets that ship
trtexec (JetPack) but not our Python package.

Precision lives in the ONNX files (typed fp16, Q/DQ int8), so no --fp16/--int8 flag is ever
emitted. TensorRT 11 networks are always strongly typed; 10.12+ needs --stronglyTyped; the
script picks the form from the trtexec it finds.
"""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

from ijepa_deploy.runtime.manifest import Manifest

SCRIPT_NAME = "build_engines.sh"


def profile_shapes(manifest: Manifest) -> dict[str, tuple[int, int, int, int]]:
    """min/opt/max input shapes (N, C, H, W) from the manifest's batch and resolution range."""
    c = manifest.architecture["num_channels"]
    res, batch = manifest.resolution, manifest.batch
    native = tuple(res["native"]) if res["dynamic"] else tuple(res["min"])
    return {"min": (batch["min"], c, *res["min"]), "opt": (batch["opt"], c, *native),
            "max": (batch["max"], c, *res["max"])}


def plan_name(precision: str, gpu_slug: str) -> str:
    return f"model_{precision}.{gpu_slug}.plan"


def trtexec_command(manifest: Manifest, precision: str, trt_major: int, trt_minor: int = 0,
                    gpu_slug: str = "${GPU_SLUG}", workspace_mib: int = 4096) -> list[str]:
    """The trtexec argument list that builds `precision`'s plan with TensorRT `trt_major.trt_minor`."""
    if (trt_major, trt_minor) < (10, 12):
        raise ValueError("trtexec before TensorRT 10.12 cannot build strongly typed networks; use TensorRT >= 10.12")
    art = manifest.artifact(precision)
    name = manifest.io["inputs"][0]["name"]
    shapes = {k: "x".join(str(d) for d in v) for k, v in profile_shapes(manifest).items()}
    cmd = ["trtexec", f"--onnx={art['file']}", f"--saveEngine={plan_name(precision, gpu_slug)}",
           f"--minShapes={name}:{shapes['min']}", f"--optShapes={name}:{shapes['opt']}",
           f"--maxShapes={name}:{shapes['max']}", f"--memPoolSize=workspace:{workspace_mib}M",
           "--timingCacheFile=timing.cache", "--profilingVerbosity=detailed", "--skipInference"]
    if trt_major == 10:
        cmd.insert(2, "--stronglyTyped")
    return cmd


def render_script(manifest: Manifest) -> str:
    precisions = [p for p in ("fp16", "int8", "fp32") if p in manifest.artifacts]
    lines = [
        "#!/usr/bin/env bash",
        f"# Build TensorRT plans for {manifest.name} on THIS machine's GPU (a plan is tied to the TensorRT",
        "# version and the GPU's compute capability). Precision is in the ONNX files: no precision flags.",
        "# Usage: ./build_engines.sh [fp16|int8|fp32 ...]   (default: " + " ".join(precisions) + ")",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "command -v trtexec >/dev/null || { echo 'trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec)' >&2; exit 1; }",
        "ver=$(trtexec --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n1 | tr -dc '0-9')",
        '[ -n "$ver" ] || { echo "cannot read the TensorRT version from trtexec" >&2; exit 1; }',
        "major=$((ver / 10000)); minor=$(((ver / 100) % 100))",
        'if [ "$major" -lt 10 ] || { [ "$major" -eq 10 ] && [ "$minor" -lt 12 ]; }; then',
        '  echo "TensorRT $major.$minor found; strongly typed builds need >= 10.12" >&2; exit 1',
        "fi",
        "GPU_SLUG=$({ nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true; } | head -n1 | "
        "tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//;s/-$//')",
        'GPU_SLUG=${GPU_SLUG:-jetson}',
        f'[ "$#" -gt 0 ] || set -- {" ".join(precisions)}',
        'for p in "$@"; do',
        '  case "$p" in',
    ]
    for p in precisions:
        v10 = " ".join(shlex.quote(a) if "$" not in a else f'"{a}"' for a in trtexec_command(manifest, p, 10, 12))
        v11 = " ".join(shlex.quote(a) if "$" not in a else f'"{a}"' for a in trtexec_command(manifest, p, 11))
        lines += [f"    {p})",
                  f'      if [ "$major" -ge 11 ]; then {v11}',
                  f"      else {v10}; fi ;;"]
    lines += ['    *) echo "unknown precision $p (have: ' + " ".join(precisions) + ')" >&2; exit 1 ;;',
              "  esac", "done", ""]
    return "\n".join(lines)


def write_build_script(folder: Path, manifest: Manifest) -> Path:
    """Export step: write build_engines.sh into the artifact folder."""
    path = Path(folder) / SCRIPT_NAME
    path.write_text(render_script(manifest))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
