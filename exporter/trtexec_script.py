"""build_engines.sh: the exact trtexec commands for an artifact folder, for targets that ship
trtexec but not our Python package (JetPack 6 with TensorRT 10.3, Triton containers with 10.x).

Precision lives in the ONNX files (typed fp16, Q/DQ int8 and fp8), so no --fp16/--int8 flag is
ever emitted. The flags come from `tensorrt_flags.build_choices`, as for the Python builder:
TensorRT 10.x gets --stronglyTyped (strong typing exists since 10.0; 11 is always typed), TF32 is
cleared for fp32 plans only. TensorRT below 10.0 is refused. Plans and timing caches are named by
`contract.naming`; fp8 is refused below compute capability 8.9 and with HARDWARE_COMPATIBLE=1. PROFILES
(e.g. 1-4,8-32) builds one optimization profile per batch bucket, with the syntax of
`build-engine --profiles`. Each built plan is recorded in the manifest with `ijepa-export
register-engine` (which inspects and gates it) where that command exists.
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
from .tensorrt_flags import (MIN_TENSORRT, BuildChoices, BuildSettings, build_choices, profile_shapes, trtexec_flags,
                             version_floor_problem)

JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # JetPack and NGC containers keep trtexec here
GPU, VERSION = "${GPU_SLUG}", "${TRT_VERSION}"


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape)


def shape_args(input_name: str, profiles: list[dict]) -> list[str]:
    """--minShapes/--optShapes/--maxShapes; with several profiles each triplet follows --profile=i."""
    args = []
    for i, p in enumerate(profiles):
        args += [f"--profile={i}"] if len(profiles) > 1 else []
        args += [f"--{k}Shapes={input_name}:{_dims(p[k])}" for k in ("min", "opt", "max")]
    return args


def trtexec_command(manifest: Manifest, precision: str, trt_version: str = VERSION, gpu_slug: str = GPU,
                    settings: BuildSettings | None = None, workspace_mib: int = 4096,
                    major: int | None = None) -> list[str]:
    """The trtexec argument list that builds `precision`'s plan with TensorRT `trt_version` (`major`
    decides the flags when the version is a shell variable)."""
    problem = None if trt_version.startswith("$") else version_floor_problem(trt_version)
    if problem:
        raise ValueError(problem)
    art = manifest.artifact(precision)
    if not art.tensorrt:
        raise ValueError(f"{precision} is not for TensorRT")
    settings = settings or BuildSettings(profiles=profile_shapes(manifest))
    choices = build_choices(precision, f"{major}.0" if major else trt_version, settings)
    plan = plan_name(precision, gpu_slug, trt_version, settings.strip_weights)
    return ["trtexec", f"--onnx={art.file}", *trtexec_flags(choices), f"--saveEngine={plan}",
            *shape_args(manifest.input_name, settings.profiles), f"--memPoolSize=workspace:{workspace_mib}M",
            f"--timingCacheFile={timing_cache_name(gpu_slug, trt_version)}", "--profilingVerbosity=detailed",
            "--skipInference"]


def _quote(args: list[str]) -> str:
    return " ".join(shlex.quote(a) if "$" not in a else f'"{a}"' for a in args)


def _env_flags(**kwargs) -> str:
    base = dict(strongly_typed=True, trtexec_strongly_typed=False, clear_tf32=False, version_compatible=False,
                hardware_level=None, strip_weights=False)
    return " ".join(trtexec_flags(BuildChoices(**{**base, **kwargs})))


def _profiles_function(manifest: Manifest) -> list[str]:
    """bash: PROFILES=1-4,8-32@16x2 -> the shape options (same syntax and checks as --profiles)."""
    lo, opt, hi = (_dims(profile_shapes(manifest)[0][k][1:]) for k in ("min", "opt", "max"))
    return [
        "shape_args() {",
        f'  local name={shlex.quote(manifest.input_name)} i=0 spec a b o n k',
        '  if [ -z "${PROFILES:-}" ]; then shapes=("${default_shapes[@]}"); return; fi',
        '  shapes=(); IFS=, read -ra specs <<< "$PROFILES"',
        '  for spec in "${specs[@]}"; do',
        r'    [[ $spec =~ ^([0-9]+)(-([0-9]+))?(@([0-9]+))?(x([0-9]+))?$ ]] || '
        '{ echo "bad PROFILES entry $spec: use MIN-MAX[@OPT][xCOPIES]" >&2; exit 1; }',
        '    a=${BASH_REMATCH[1]}; b=${BASH_REMATCH[3]:-$a}; o=${BASH_REMATCH[5]:-$b}; n=${BASH_REMATCH[7]:-1}',
        '    (( 1 <= a && a <= o && o <= b )) || { echo "PROFILES entry $spec needs 1 <= min <= opt <= max" >&2; exit 1; }',
        '    for ((k = 0; k < n; k++)); do',
        f'      shapes+=("--profile=$i" "--minShapes=$name:${{a}}x{lo}" "--optShapes=$name:${{o}}x{opt}" '
        f'"--maxShapes=$name:${{b}}x{hi}"); i=$((i + 1))',
        "    done",
        "  done",
        "}",
    ]


def _header(manifest: Manifest, precisions: list[str], default: list[str]) -> list[str]:
    floor = ".".join(map(str, MIN_TENSORRT))
    return [
        "#!/usr/bin/env bash",
        f"# Build TensorRT plans for {manifest.name} on THIS machine's GPU (a plan is tied to the TensorRT",
        "# version and the GPU's compute capability). Precision is in the ONNX files: no precision flags.",
        "# Usage: ./build_engines.sh [" + "|".join(precisions) + " ...]   (default: " + " ".join(default) + ")",
        "# Environment: PROFILES=1-4,8-32 (one optimization profile per batch bucket), VERSION_COMPATIBLE=1,",
        "# HARDWARE_COMPATIBLE=1 (any Ampere+ GPU; not fp8), STRIP_WEIGHTS=1 (refitted from the ONNX at load),",
        "# TRTEXEC=/path/to/trtexec. Works with TensorRT 10.0+ (JetPack 6: 10.3) and 11.x.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        f'TRTEXEC=${{TRTEXEC:-$(command -v trtexec || echo {JETPACK_TRTEXEC})}}',
        '[ -x "$TRTEXEC" ] || { echo "trtexec not found (set TRTEXEC=...; JetPack and NGC containers: '
        f'{JETPACK_TRTEXEC})" >&2; exit 1; }}',
        'trtexec() { "$TRTEXEC" "$@"; }',
        "TRT_VERSION=$(trtexec --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n1 | tr -dc '0-9')",
        '[ -n "$TRT_VERSION" ] || { echo "cannot read the TensorRT version from trtexec" >&2; exit 1; }',
        "major=$((10#$TRT_VERSION / 10000)); minor=$(((10#$TRT_VERSION / 100) % 100)); patch=$((10#$TRT_VERSION % 100))",
        "TRT_VERSION=$major.$minor.$patch",
        f'if [ "$major" -lt {MIN_TENSORRT[0]} ]; then',
        f'  echo "TensorRT $TRT_VERSION found; our strongly typed files need TensorRT >= {floor}" >&2; exit 1',
        "fi",
        "GPU_SLUG=$({ nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true; } | head -n1 | "
        "tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//;s/-$//')",
        'GPU_SLUG=${GPU_SLUG:-jetson}',
        "CC=$({ nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null || true; } | head -n1 | tr -d ' ')",
        'extra=(); register=(); variant=""',
        f'if [ "${{VERSION_COMPATIBLE:-0}}" = 1 ]; then extra+=({_env_flags(version_compatible=True)}); '
        'register+=(--version-compatible); fi',
        f'if [ "${{HARDWARE_COMPATIBLE:-0}}" = 1 ]; then extra+=({_env_flags(hardware_level="ampere_plus")}); fi',
        f'if [ "${{STRIP_WEIGHTS:-0}}" = 1 ]; then extra+=({_env_flags(strip_weights=True)}); variant=.stripped; fi',
        'if [ "${STRIP_WEIGHTS:-0}" = 1 ] && [ "${VERSION_COMPATIBLE:-0}" = 1 ]; then',
        '  echo "STRIP_WEIGHTS and VERSION_COMPATIBLE do not combine (the lean runtime cannot refit)" >&2; exit 1',
        "fi",
    ]


def _case(manifest: Manifest, precision: str) -> list[str]:
    art = manifest.artifact(precision)
    guard = []
    if art.min_compute_capability:
        need = art.min_compute_capability
        guard = [f'      if [ -n "$CC" ] && ! awk -v a="$CC" -v b="{need}" \'BEGIN{{exit !(a+0 >= b+0)}}\'; then',
                 f'        echo "{precision} needs compute capability >= {need}; this GPU has $CC" >&2; exit 1; fi',
                 '      if [ "${HARDWARE_COMPATIBLE:-0}" = 1 ]; then',
                 f'        echo "{precision} needs compute capability >= {need}: no hardware-compatible plan" >&2; exit 1; fi']
    per_run = ("--minShapes", "--optShapes", "--maxShapes", "--profile=", "--saveEngine")  # set by the script
    v10, v11 = (_quote([a for a in trtexec_command(manifest, precision, major=m) if not a.startswith(per_run)])
                for m in (10, 11))
    plan = plan_name(precision, GPU, VERSION, stripped="${variant}")
    return [f"    {precision})", *guard,
            f'      plan="{plan}"',
            f'      if [ "$major" -ge 11 ]; then {v11} --saveEngine="$plan" "${{shapes[@]}}" "${{extra[@]}}"',
            f'      else {v10} --saveEngine="$plan" "${{shapes[@]}}" "${{extra[@]}}"; fi ;;']


def render_script(manifest: Manifest) -> str:
    precisions = [p for p, a in manifest.artifacts.items() if a.tensorrt]
    default = default_plan_precisions(manifest.artifacts)
    lines = _header(manifest, precisions, default)
    lines.append("default_shapes=(" + _quote(shape_args(manifest.input_name, profile_shapes(manifest))) + ")")
    lines += _profiles_function(manifest)
    lines += ["shape_args", f'[ "$#" -gt 0 ] || set -- {" ".join(default)}', 'for p in "$@"; do', '  case "$p" in']
    for p in precisions:
        lines += _case(manifest, p)
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
