"""Building plans without TensorRT: the flags both builders use (per precision and version), the
version floor (10.0: JetPack 6 ships 10.3), build_engines.sh against stand-in trtexecs of 10.3,
10.13 and 11.4, batch buckets, the requests refused before a build, and the gate batched within the
plan's own profiles."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ijepa_deploy.exporter.errors import EngineBuildError
from ijepa_deploy.contract.naming import parse_plan_name, plan_name, timing_cache_name
from ijepa_deploy.exporter.tensorrt_flags import (BuildSettings, build_choices, gate_chunks, gate_problem, profile_shapes,
                                                  request_problem, trtexec_flags, version_floor_problem)
from ijepa_deploy.exporter.trtexec_script import SCRIPT_NAME, render_script, trtexec_command
from ijepa_deploy.runtime import Manifest
from ijepa_deploy.runtime.backends.tensorrt_profiles import Bucket

from .helpers import one_error_line, run_module

PRECISIONS = ("fp32", "fp16", "int8", "fp8")
VERSIONS = ("10.3.0.26", "10.13.3.9", "11.4.0.106")
PRECISION_FLAGS = {"--fp16", "--int8", "--best", "--bf16", "--fp8"}


def test_plan_names_round_trip():
    name = plan_name("fp8", "nvidia-h100-80gb-hbm3", "10.13.3.9")
    assert name == "model_fp8.nvidia-h100-80gb-hbm3.trt10.13.3.plan"
    assert parse_plan_name(name).version == "10.13.3" and not parse_plan_name(name).stripped
    stripped = parse_plan_name(plan_name("int8-cpu", "orin", "10.3.0.26", stripped=True))
    assert (stripped.precision, stripped.gpu, stripped.stripped) == ("int8-cpu", "orin", True)
    assert parse_plan_name("model.plan") is None and parse_plan_name("model_fp16.x.trt10.3.0.onnx") is None
    assert timing_cache_name("orin", "10.3.0.26") == "timing.orin.trt10.3.0.cache"


def test_version_floor_is_10_0():
    assert version_floor_problem("10.0.1.6") is None and version_floor_problem("10.3.0.26") is None
    assert "JetPack 6 ships 10.3" in version_floor_problem("8.6.1.6")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_flags_per_precision_and_version(precision, version):
    choices = build_choices(precision, version, BuildSettings(profiles=[]))
    assert choices.strongly_typed and choices.trtexec_strongly_typed == version.startswith("10.")
    assert choices.clear_tf32 == (precision == "fp32")  # a quantized plan's float region is typed fp16 by the file
    assert not build_choices("fp32", version, BuildSettings(profiles=[], tf32=True)).clear_tf32
    assert not PRECISION_FLAGS & set(trtexec_flags(choices))


def _configured(monkeypatch, precision, **settings):
    from . import fake_tensorrt as fake

    trt, _ = fake.install(monkeypatch)
    from ijepa_deploy.exporter.tensorrt_build import _configure

    s = BuildSettings(profiles=[{"min": (1, 3, 56, 56), "opt": (2, 3, 56, 56), "max": (2, 3, 56, 56)},
                                {"min": (4, 3, 56, 56), "opt": (8, 3, 56, 56), "max": (8, 3, 56, 56)}], **settings)
    config = trt.Builder(None).create_builder_config()
    _configure(trt, trt.Builder(None), config, s, build_choices(precision, trt.__version__, s), "pixel_values")
    return config, s


@pytest.mark.parametrize("precision", PRECISIONS)
def test_both_builders_make_the_same_choices(monkeypatch, tiny_artifacts, precision):
    """The Python builder and the trtexec command agree on TF32, strong typing and the profiles."""
    config, settings = _configured(monkeypatch, precision)
    cmd = trtexec_command(Manifest.load(tiny_artifacts), precision, "10.3.0", "orin", settings)
    assert ("TF32" in config.cleared) == ("--noTF32" in cmd) == (precision == "fp32")
    assert "--stronglyTyped" in cmd and not PRECISION_FLAGS & set(cmd)
    assert len(config.profiles) == 2 and cmd.count("--profile=1") == 1
    assert config.profiles[1] == ((4, 3, 56, 56), (8, 3, 56, 56), (8, 3, 56, 56))


def test_configure_strip_and_hardware(monkeypatch):
    config, _ = _configured(monkeypatch, "fp16", strip_weights=True, hardware_compatible=True)
    assert {"STRIP_PLAN", "REFIT_IDENTICAL", "TF32"} <= config.flags and not config.cleared
    assert config.hardware_compatibility_level == "AMPERE_PLUS"


def test_trtexec_commands(tiny_artifacts):
    manifest = Manifest.load(tiny_artifacts)
    v103 = trtexec_command(manifest, "fp16", "10.3.0", "orin")
    v11 = trtexec_command(manifest, "int8", "11.4.0", "nvidia-h100")
    assert v103[:3] == ["trtexec", "--onnx=model_fp16.onnx", "--stronglyTyped"]
    assert "--saveEngine=model_fp16.orin.trt10.3.0.plan" in v103 and "--timingCacheFile=timing.orin.trt10.3.0.cache" in v103
    assert "--minShapes=pixel_values:1x3x28x28" in v103 and "--maxShapes=pixel_values:4x3x112x112" in v103
    assert "--stronglyTyped" not in v11 and "--noTF32" not in v11 and "--noTF32" in trtexec_command(manifest, "fp32", "11.4")
    for bad, match in (("8.6.1", "10.0"), ("9.3.0", "10.0")):
        with pytest.raises(ValueError, match=match):
            trtexec_command(manifest, "fp16", bad)
    with pytest.raises(ValueError, match="not for TensorRT"):
        trtexec_command(manifest, "int8-cpu", "11.4")


# ------------------------------------------------------------------------- build_engines.sh


def test_build_script_is_in_every_folder_and_valid_bash(tiny_artifacts):
    script = (tiny_artifacts / SCRIPT_NAME).read_text()
    assert script == render_script(Manifest.load(tiny_artifacts))
    assert (tiny_artifacts / SCRIPT_NAME).stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(tiny_artifacts / SCRIPT_NAME)]).returncode == 0
    assert "int8-cpu)" not in script and not any(f in script for f in PRECISION_FLAGS)


def _stand_ins(tmp_path: Path, cc: str = "9.0", on_path: bool = True) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    trtexec = bin_dir / ("trtexec" if on_path else "trtexec-elsewhere")
    trtexec.write_text('#!/bin/sh\nif [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec '
                       '[TensorRT v${TRT_VER}] # trtexec"; exit 0; fi\necho "$@" >> "$LOG"\n'
                       'for a in "$@"; do case "$a" in --saveEngine=*) echo plan > "${a#--saveEngine=}";; esac; done\n')
    (bin_dir / "nvidia-smi").write_text(f'#!/bin/sh\ncase "$*" in *compute_cap*) echo "{cc}";; *) echo "NVIDIA H100 '
                                        'PCIe";; esac\n')
    (bin_dir / "ijepa-export").write_text('#!/bin/sh\necho "$@" >> "$REGISTER_LOG"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(tmp_path / "log"), "REGISTER_LOG": str(tmp_path / "reg")}
    return env if on_path else {**env, "TRTEXEC": str(trtexec)}


def _run_script(tiny_artifacts, tmp_path, ver, *precisions, cc="9.0", on_path=True, **env):
    folder = tmp_path / "art"
    if not folder.exists():
        shutil.copytree(tiny_artifacts, folder)
    (tmp_path / "log").unlink(missing_ok=True)
    full = {**_stand_ins(tmp_path, cc, on_path), "TRT_VER": ver, **env}
    out = subprocess.run(["bash", str(folder / SCRIPT_NAME), *precisions], env=full, capture_output=True, text=True)
    lines = (tmp_path / "log").read_text().splitlines() if (tmp_path / "log").exists() else []
    return out, lines


@pytest.mark.parametrize("ver,tag", [("100300", "10.3.0"), ("101303", "10.13.3"), ("110400", "11.4.0")])
def test_build_script_runs_against_stand_ins(tiny_artifacts, tmp_path, ver, tag):
    """JetPack 6 (10.3), a Triton 25.x container (10.13) and TensorRT 11.4 all build, with no precision flag."""
    out, lines = _run_script(tiny_artifacts, tmp_path, ver, "fp16", "int8", "fp8", "fp32", on_path=ver != "100300")
    assert out.returncode == 0, out.stderr
    assert len(lines) == 4 and all(("--stronglyTyped" in line) == tag.startswith("10.") for line in lines)
    assert not any(f in line.split() for line in lines for f in PRECISION_FLAGS)
    assert ["--noTF32" in line for line in lines] == [False, False, False, True]  # fp32 only, as build-engine
    assert f"--saveEngine=model_fp8.nvidia-h100-pcie.trt{tag}.plan" in lines[2]
    registered = (tmp_path / "reg").read_text().splitlines()  # each plan is recorded (and gated) at once
    assert registered[0] == f"register-engine --artifacts . model_fp16.nvidia-h100-pcie.trt{tag}.plan --precision fp16"


def test_build_script_profiles_and_variants(tiny_artifacts, tmp_path):
    out, lines = _run_script(tiny_artifacts, tmp_path, "100300", "int8", PROFILES="1-2,4x2")
    assert out.returncode == 0, out.stderr
    args = lines[0].split()
    assert [a for a in args if a.startswith("--profile=")] == ["--profile=0", "--profile=1", "--profile=2"]
    i = args.index("--profile=1")
    assert args[i + 1:i + 4] == ["--minShapes=pixel_values:4x3x28x28", "--optShapes=pixel_values:4x3x56x56",
                                 "--maxShapes=pixel_values:4x3x112x112"]
    out, lines = _run_script(tiny_artifacts, tmp_path, "101303", "fp16", STRIP_WEIGHTS="1", HARDWARE_COMPATIBLE="1")
    assert out.returncode == 0 and "--stripWeights" in lines[0] and "--hardwareCompatibilityLevel=ampere+" in lines[0]
    assert "model_fp16.nvidia-h100-pcie.trt10.13.3.stripped.plan" in lines[0]
    for env, message in (({"PROFILES": "4-1"}, "needs 1 <= min <= opt <= max"), ({"PROFILES": "x"}, "bad PROFILES"),
                         ({"STRIP_WEIGHTS": "1", "VERSION_COMPATIBLE": "1"}, "do not combine")):
        out, _ = _run_script(tiny_artifacts, tmp_path, "101303", "fp16", **env)
        assert out.returncode == 1 and message in out.stderr


def test_build_script_refusals(tiny_artifacts, tmp_path):
    out, _ = _run_script(tiny_artifacts, tmp_path, "101303", "fp8", cc="8.6")
    assert out.returncode == 1 and "fp8 needs compute capability >= 8.9; this GPU has 8.6" in out.stderr
    out, _ = _run_script(tiny_artifacts, tmp_path, "101303", "fp8", HARDWARE_COMPATIBLE="1")
    assert out.returncode == 1 and "no hardware-compatible plan" in out.stderr
    out, _ = _run_script(tiny_artifacts, tmp_path, "090300")
    assert out.returncode == 1 and "need TensorRT >= 10.0" in out.stderr
    out = subprocess.run(["bash", str(tmp_path / "art" / SCRIPT_NAME)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "TRTEXEC": str(tmp_path / "none")})
    assert out.returncode == 1 and "trtexec not found" in out.stderr


# ------------------------------------------------------------------------- what is refused before a build


def test_requests_refused_up_front(tiny_artifacts):
    manifest = Manifest.load(tiny_artifacts)
    shapes = profile_shapes(manifest, [Bucket(1, 2, 2), Bucket(4, 4, 4)])
    assert [s["max"][0] for s in shapes] == [2, 4] and shapes[0]["opt"] == (2, 3, 56, 56)
    assert "hardware-compatible" in request_problem("fp8", "8.9", BuildSettings(profiles=shapes, hardware_compatible=True))
    assert request_problem("int8", None, BuildSettings(profiles=shapes, hardware_compatible=True)) is None
    assert "do not combine" in request_problem("fp16", None, BuildSettings(profiles=shapes, strip_weights=True,
                                                                           version_compatible=True))
    narrow = profile_shapes(manifest, None, ((28, 28), (28, 28)))
    assert "outside every profile's resolution range" in gate_problem(narrow, 3, 56, 56)
    assert gate_problem(shapes, 3, 56, 56) is None
    assert gate_chunks(16, [{"max": (2, 3, 56, 56)}]) == [(i, i + 2) for i in range(0, 16, 2)]


@pytest.mark.parametrize("args,message", [
    (["--precision", "fp8", "--hardware-compatible"], "no hardware-compatible plan|hardware-compatible plan holds"),
    (["--precision", "fp16", "--max-resolution", "28x28"], "held-out images are 56x56"),
    (["--precision", "fp16", "--profiles", "4-1"], "needs 1 <= min <= opt <= max"),
    (["--precision", "fp16", "--profiles", "1-4", "--max-batch", "2"], "--profiles replaces"),
    (["--precision", "fp16", "--strip-weights", "--version-compatible"], "do not combine"),
])
def test_build_engine_refuses_before_needing_tensorrt(tiny_artifacts, args, message):
    import re

    line = one_error_line(run_module("export", "build-engine", "--artifacts", str(tiny_artifacts), *args))
    assert re.search(message, line), line


class StrictPlan:
    """Stands in for a plan with the profiles of its record: runs the ONNX under ONNX Runtime but
    refuses, as TensorRT does, a batch outside every profile."""

    def __init__(self, plan, entry, device=0):
        from ijepa_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        self.ort = OnnxRuntimeBackend(Manifest.load(plan.parent).verify(entry.precision))
        self.profiles = entry.profiles

    def run(self, pixels, names=None):
        if not any(p["min"][0] <= len(pixels) <= p["max"][0] for p in self.profiles):
            raise AssertionError(f"batch {len(pixels)} is outside the plan's profiles")
        return self.ort.run(pixels, names)

    def close(self):
        pass


def test_gate_runs_within_the_plans_profile(tiny_artifacts, monkeypatch):
    """build-engine --max-batch 2 under the manifest's 4: the gate batches by the plan's profile."""
    from ijepa_deploy.exporter import tensorrt_build
    from ijepa_deploy.contract.manifest import Engine

    monkeypatch.setattr(tensorrt_build, "TensorRTBackend", StrictPlan)
    manifest = Manifest.load(tiny_artifacts)
    settings = tensorrt_build.settings_for(manifest, batch=(None, 2, 2))
    assert settings.profiles[0]["max"][0] == 2
    entry = Engine(precision="fp16", file="model_fp16.x.trt10.3.0.plan", sha256="0" * 64, bytes=1,
                   tensorrt_version="10.3.0.26", gpu_name="x", compute_capability="9.0",
                   profiles=[{"input": "pixel_values", **{k: list(v) for k, v in settings.profiles[0].items()}}])
    record = tensorrt_build.validate_plan(manifest, "fp16", tiny_artifacts / "model_fp16.onnx", entry,
                                          manifest.verify("fp16"))
    assert record.passed and record.metrics["images"] == 16 and np.isclose(record.metrics["centered_cosine"], 1)


def test_settings_for(tiny_artifacts):
    from ijepa_deploy.exporter.tensorrt_build import settings_for

    manifest = Manifest.load(tiny_artifacts)
    s = settings_for(manifest, profiles="1-2,3-4x2", workspace_gb=2.0)
    assert len(s.profiles) == 3 and s.workspace_gb == 2.0 and s.buckets[2] == Bucket(3, 4, 4)
    assert settings_for(manifest, resolution=((56, 56), None)).profiles[0]["min"] == (1, 3, 56, 56)
    with pytest.raises(EngineBuildError, match="exceeds"):
        settings_for(manifest, resolution=((112, 112), (56, 56)))
    data = json.loads((tiny_artifacts / "manifest.json").read_text())
    assert data["resolution"]["dynamic"]  # the tiny export is dynamic; fixed exports refuse --min/--max-resolution
