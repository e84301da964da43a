"""TensorRT: everything that needs no GPU runs here for real; the GPU path skips with its reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ijepa_deploy.exporter.triton_repo import write_triton_repo
from ijepa_deploy.exporter.trtexec_script import SCRIPT_NAME, profile_shapes, render_script, trtexec_command
from ijepa_deploy.runtime import BackendError, Embedder, Manifest
from ijepa_deploy.runtime.backends.tensorrt_backend import check_engine_compat, gpu_slug, tensorrt_unavailable_reason

from .conftest import export_tiny

TRT_REASON = tensorrt_unavailable_reason()
needs_gpu = pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT GPU tests need TensorRT and a CUDA device: "
                                                            f"{TRT_REASON}")


def test_trtexec_commands_tensorrt_10_and_11(tiny_artifacts):
    manifest = Manifest.load(tiny_artifacts)
    assert profile_shapes(manifest) == {"min": (1, 3, 28, 28), "opt": (4, 3, 56, 56), "max": (4, 3, 112, 112)}
    v10 = trtexec_command(manifest, "fp16", 10, 12, gpu_slug="nvidia-a100")
    v11 = trtexec_command(manifest, "int8", 11, 4, gpu_slug="orin")
    assert v10[:3] == ["trtexec", "--onnx=model_fp16.onnx", "--stronglyTyped"]
    assert "--saveEngine=model_fp16.nvidia-a100.plan" in v10
    assert "--minShapes=pixel_values:1x3x28x28" in v10 and "--optShapes=pixel_values:4x3x56x56" in v10
    assert "--maxShapes=pixel_values:4x3x112x112" in v10 and "--timingCacheFile=timing.cache" in v10
    assert "--stronglyTyped" not in v11 and "--onnx=model_int8.onnx" in v11
    for cmd in (v10, v11):
        assert not {"--fp16", "--int8", "--best", "--bf16"} & set(cmd)
    with pytest.raises(ValueError, match="10.12"):
        trtexec_command(manifest, "fp16", 10, 8)


def test_build_script_is_in_every_folder_and_valid_bash(tiny_artifacts):
    script = (tiny_artifacts / SCRIPT_NAME).read_text()
    assert script == render_script(Manifest.load(tiny_artifacts))
    assert (tiny_artifacts / SCRIPT_NAME).stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(tiny_artifacts / SCRIPT_NAME)]).returncode == 0
    assert script.count("--stronglyTyped") == 3 and "--fp16" not in script and "--int8 " not in script
    for precision in ("fp16)", "int8)", "fp32)"):
        assert precision in script


def test_build_script_runs_against_a_trtexec_stand_in(tiny_artifacts, tmp_path):
    """The script's own logic (version detection, flag choice) with a recording stand-in for trtexec."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trtexec").write_text('#!/bin/sh\nif [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v'
                                     '${TRT_VER}] # trtexec"; exit 0; fi\necho "$@" >> "$LOG"\n')
    (bin_dir / "trtexec").chmod(0o755)
    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    for ver, strongly in (("101600", True), ("110400", False)):
        log = tmp_path / f"log{ver}"
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TRT_VER": ver, "LOG": str(log)}
        out = subprocess.run(["bash", str(folder / SCRIPT_NAME), "fp16", "int8"], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        lines = log.read_text().splitlines()
        assert len(lines) == 2 and all(("--stronglyTyped" in line) == strongly for line in lines)
        assert "model_int8.jetson.plan" in lines[1] or "model_int8." in lines[1]
    out = subprocess.run(["bash", str(folder / SCRIPT_NAME)], env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TRT_VER": "100800",
                                                                  "LOG": str(tmp_path / "x")}, capture_output=True, text=True)
    assert out.returncode == 1 and "need >= 10.12" in out.stderr


ENGINE = {"file": "model_fp16.nvidia-a100.plan", "tensorrt_version": "10.16.0", "compute_capability": "8.0",
          "gpu_name": "NVIDIA A100-SXM4-80GB", "version_compatible": False, "hardware_compatibility": None}


@pytest.mark.parametrize("local,ok", [
    ({"tensorrt_version": "10.16.0", "compute_capability": "8.0", "gpu_name": "NVIDIA A100"}, True),
    ({"tensorrt_version": "10.16.1", "compute_capability": "8.0", "gpu_name": "NVIDIA A100"}, False),
    ({"tensorrt_version": "11.4.0", "compute_capability": "8.0", "gpu_name": "NVIDIA A100"}, False),
    ({"tensorrt_version": "10.16.0", "compute_capability": "9.0", "gpu_name": "NVIDIA H100"}, False),
    ({"tensorrt_version": "10.16.0", "compute_capability": "8.7", "gpu_name": "Orin"}, False),
])
def test_engine_compatibility(local, ok):
    if ok:
        check_engine_compat(ENGINE, local)
        return
    with pytest.raises(BackendError) as exc:
        check_engine_compat(ENGINE, local, "engines/vith14_1k")
    message = str(exc.value)
    assert "built with TensorRT 10.16.0 for sm_80" in message
    assert f"this machine has TensorRT {local['tensorrt_version']}" in message
    assert "rebuild with `ijepa-export build-engine --artifacts engines/vith14_1k`" in message


def test_engine_compatibility_flags():
    compatible = {**ENGINE, "version_compatible": True, "hardware_compatibility": "ampere_plus"}
    check_engine_compat(compatible, {"tensorrt_version": "10.17.2", "compute_capability": "9.0"})
    with pytest.raises(BackendError):  # version compatibility stays within a major
        check_engine_compat(compatible, {"tensorrt_version": "11.0.0", "compute_capability": "9.0"})
    with pytest.raises(BackendError):  # ampere_plus excludes Turing
        check_engine_compat(compatible, {"tensorrt_version": "10.16.0", "compute_capability": "7.5"})
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def _parse_pbtxt(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_repository_onnx(tiny_artifacts, tmp_path):
    repo = write_triton_repo(tiny_artifacts, tmp_path / "repo", "fp16", instance_kind="KIND_CPU")
    enc = _parse_pbtxt(repo / "ijepa_tiny_encoder" / "config.pbtxt")
    assert enc.backend == "onnxruntime" and enc.max_batch_size == 4
    assert [i.name for i in enc.input] == ["pixel_values"] and list(enc.input[0].dims) == [3, -1, -1]
    assert [o.name for o in enc.output] == ["last_hidden_state", "embedding"] and list(enc.output[1].dims) == [64]
    assert list(enc.dynamic_batching.preferred_batch_size) == [4]
    pre = _parse_pbtxt(repo / "ijepa_tiny_preprocess" / "config.pbtxt")
    assert pre.backend == "python" and list(pre.output[0].dims) == [3, 56, 56]
    ens = _parse_pbtxt(repo / "ijepa_tiny" / "config.pbtxt")
    assert ens.platform == "ensemble" and [s.model_name for s in ens.ensemble_scheduling.step] == [
        "ijepa_tiny_preprocess", "ijepa_tiny_encoder"]
    assert (repo / "ijepa_tiny_encoder" / "1" / "model.onnx").read_bytes() == (tiny_artifacts / "model_fp16.onnx").read_bytes()
    compile(Path(repo / "ijepa_tiny_preprocess" / "1" / "model.py").read_text(), "model.py", "exec")


def test_triton_repository_plan_respects_profile(tiny_artifacts, tmp_path):
    """A plan whose profile max batch (3) is below the manifest's (4): max_batch_size follows the plan."""
    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["engines"]["fp16"] = {**ENGINE, "precision": "fp16",
                               "profiles": [{"input": "pixel_values", "min": [1, 3, 28, 28], "opt": [2, 3, 56, 56],
                                             "max": [3, 3, 112, 112]}]}
    (folder / "manifest.json").write_text(json.dumps(data))
    (folder / ENGINE["file"]).write_bytes(b"plan bytes")  # only copied, never deserialized here
    repo = write_triton_repo(folder, tmp_path / "repo", "fp16")
    enc = _parse_pbtxt(repo / "ijepa_tiny_encoder" / "config.pbtxt")
    assert enc.platform == "tensorrt_plan" and enc.max_batch_size == 3
    assert list(enc.dynamic_batching.preferred_batch_size) == [3]
    assert _parse_pbtxt(repo / "ijepa_tiny" / "config.pbtxt").max_batch_size == 3
    assert (repo / "ijepa_tiny_encoder" / "1" / "model.plan").read_bytes() == b"plan bytes"


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT and a GPU are present: the no-TensorRT path does not apply")
def test_without_tensorrt_build_engine_says_what_is_missing(tiny_artifacts):
    out = subprocess.run([sys.executable, "-m", "ijepa_deploy.exporter", "build-engine", "--artifacts", str(tiny_artifacts)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: cannot build TensorRT engines here: ")
    assert TRT_REASON in out.stderr and "build_engines.sh" in out.stderr and "build-engine --artifacts" in out.stderr


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT and a GPU are present: the no-TensorRT path does not apply")
def test_without_tensorrt_export_engine_records_skip(hf_dir, tmp_path):
    from ijepa_deploy.exporter.tensorrt_build import engine_step

    folder = export_tiny(hf_dir, tmp_path, max_batch=1, precisions=("fp32", "fp16"))
    manifest = Manifest.load(folder)
    engine_step(("fp32", "fp16"))(folder, manifest)
    assert manifest.engines == {"fp16": {"skipped": TRT_REASON}}
    with pytest.raises(BackendError, match="has no TensorRT plan for fp16"):
        Embedder.load(folder, "fp16", backend="tensorrt")
    assert Embedder.load(folder, "fp16", backend="auto").backend.name == "onnxruntime"


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_gpu_build_validate_and_run(tiny_artifacts, tmp_path, photos, precision):
    from ijepa_deploy.exporter.trtexec_script import profile_shapes as shapes_of
    from ijepa_deploy.exporter.tensorrt_build import BuildSettings, build_engines

    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    manifest = Manifest.load(folder)
    entries = build_engines(folder, manifest, [precision], BuildSettings(shapes=shapes_of(manifest),
                                                                         timing_cache=folder / "timing.cache"))
    manifest.save(folder)
    assert entries[precision]["validation"]["passed"] and (folder / "timing.cache").stat().st_size > 0
    paths = sorted(photos["calib"].iterdir())
    reference = Embedder.load(folder, precision, backend="onnxruntime").embed(paths)
    with Embedder.load(folder, precision, backend="tensorrt") as embedder:
        for batch in (1, 3, 4):
            got = embedder.embed(paths, batch_size=batch)
            cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
            assert cos.min() >= (0.999 if precision == "fp16" else 0.99)
