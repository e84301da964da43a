"""TensorRT around the plans: manifest records per GPU and version, the commands without TensorRT
(each says what is missing, in one line), the extras that resolve TensorRT for Triton 25.x/JetPack
(10.x) or 11.x, and the real GPU path, which skips with its reason where TensorRT or a GPU is absent
(scripts/gpu-check.sh runs it where they are)."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from ijepa_deploy.contract.naming import plan_name
from ijepa_deploy.runtime import BackendError, Embedder, Manifest
from ijepa_deploy.contract.naming import gpu_slug
from ijepa_deploy.runtime.backends.tensorrt_backend import select_engine, tensorrt_unavailable_reason
from ijepa_deploy.contract.errors import ManifestError

from .helpers import one_error_line, run_module

ROOT = Path(__file__).resolve().parents[1]
TRT_REASON = tensorrt_unavailable_reason()
needs_gpu = pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT GPU tests need TensorRT and a CUDA device: "
                                                            f"{TRT_REASON}")
no_trt = pytest.mark.skipif(TRT_REASON is None, reason="TensorRT and a GPU are present: the no-TensorRT path does not apply")


def _with_engines(tiny_artifacts, tmp_path, engines: list[dict]) -> Path:
    from ijepa_deploy.contract.integrity import sha256_file

    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    data = json.loads((folder / "manifest.json").read_text())
    for e in engines:
        (folder / e["file"]).write_bytes(b"plan bytes of " + e["file"].encode())
        e.update(sha256=sha256_file(folder / e["file"]), bytes=(folder / e["file"]).stat().st_size)
    data["engines"] = engines
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


def _engine(precision="fp16", gpu="NVIDIA A100-SXM4-80GB", trt="10.16.0", cc="8.0", max_batch=3, **kw) -> dict:
    return {"precision": precision, "file": plan_name(precision, gpu_slug(gpu), trt), "tensorrt_version": trt,
            "gpu_name": gpu, "compute_capability": cc, "version_compatible": False, "hardware_compatibility": None,
            "profiles": [{"input": "pixel_values", "min": [1, 3, 28, 28], "opt": [2, 3, 56, 56],
                          "max": [max_batch, 3, 112, 112]}], **kw}


def test_engines_are_recorded_per_gpu_and_version(tiny_artifacts, tmp_path):
    folder = _with_engines(tiny_artifacts, tmp_path, [_engine(), _engine(gpu="NVIDIA H100 80GB HBM3", cc="9.0"),
                                                      _engine(trt="11.4.0")])
    manifest = Manifest.load(folder)
    assert len(manifest.engines_for("fp16")) == 3 and len({e.file for e in manifest.engines}) == 3
    engine, reason = select_engine(manifest, "fp16")
    if TRT_REASON:
        assert engine is None and TRT_REASON in reason
    assert select_engine(manifest, "int8")[0] is None and "no TensorRT plan for int8" in select_engine(manifest, "int8")[1]


def test_engine_file_names_are_confined(tiny_artifacts, tmp_path):
    folder = _with_engines(tiny_artifacts, tmp_path, [_engine()])
    data = json.loads((folder / "manifest.json").read_text())
    data["engines"][0]["file"] = "../elsewhere.plan"
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"engines\[0\]\.file"):
        Manifest.load(folder)



@no_trt
def test_without_tensorrt_build_engine_says_what_is_missing(tiny_artifacts):
    out = run_module("export", "build-engine", "--artifacts", str(tiny_artifacts))
    line = one_error_line(out)
    assert line.startswith("error: cannot build TensorRT engines here: ")
    assert TRT_REASON in line and "build_engines.sh" in line and "build-engine --artifacts" in line


@no_trt
def test_without_tensorrt_register_engine_says_what_is_missing(tiny_artifacts, tmp_path):
    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    (folder / "model_fp16.x.trt10.16.0.plan").write_bytes(b"plan")
    out = run_module("export", "register-engine", "--artifacts", str(folder),
                     str(folder / "model_fp16.x.trt10.16.0.plan"))
    assert "cannot register model_fp16.x.trt10.16.0.plan here" in one_error_line(out)
    (tmp_path / "outside.plan").write_bytes(b"plan")
    out = run_module("export", "register-engine", "--artifacts", str(folder), str(tmp_path / "outside.plan"))
    assert "must be inside the artifact folder" in one_error_line(out)


@no_trt
def test_without_tensorrt_export_engine_step_and_runtime(hf_dir, tmp_path, photos, caplog):
    from ijepa_deploy.exporter.tensorrt_build import engine_step

    from .helpers import export_tiny

    folder = export_tiny(hf_dir, tmp_path, max_batch=1, precisions=("fp32", "fp16"), eval_images=photos["eval"])
    manifest = Manifest.load(folder)
    manifest = engine_step(("fp32", "fp16"))(folder, manifest)
    assert manifest.engines == () and "TensorRT engines skipped" in caplog.text
    with pytest.raises(BackendError, match="has no TensorRT plan for fp16"):
        Embedder.load(folder, "fp16", backend="tensorrt")
    assert Embedder.load(folder, "fp16", backend="auto").backend.name in ("onnxruntime", "openvino")


def test_tensorrt_extras_resolve_a_major():
    """Triton 25.x containers and JetPack carry TensorRT 10.x: the default extras stay below 11 (an 11.x
    plan never loads on 10.x); the -trt11 extras take 11. cuda-python follows the driver's CUDA major."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["tensorrt-cu12"] == ["tensorrt-cu12>=10.3,<11", "cuda-python>=12.6,<13"]
    assert extras["tensorrt-cu13"] == ["tensorrt-cu13>=10.13,<11", "cuda-python>=13,<14"]
    assert extras["tensorrt-cu12-trt11"][0] == "tensorrt-cu12>=11,<12" and extras["tensorrt"] == ["ijepa-deploy[tensorrt-cu12]"]
    assert extras["tensorrt-cu13-trt11"] == ["tensorrt-cu13>=11,<12", "cuda-python>=13,<14"]
    assert not any(d.startswith("cuda-python") and "<" not in d for deps in extras.values() for d in deps)


# ---------------------------------------------------------------------- on a GPU


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_gpu_build_register_and_run(tiny_artifacts, tmp_path, photos, precision):
    from ijepa_deploy.exporter.tensorrt_build import build_engine_cli
    from ijepa_deploy.exporter.tensorrt_register import register_engine

    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    plans = build_engine_cli(folder, [precision], profiles="1-2,3-4")
    manifest = Manifest.load(folder)
    engine = manifest.engines_for(precision)[0]
    assert engine.validation.passed and (folder / engine.timing_cache).stat().st_size > 0
    assert register_engine(folder, plans[0], precision=precision) == plans[0]  # re-registering replaces the record
    assert len(Manifest.load(folder).engines_for(precision)) == 1
    paths = sorted(photos["eval"].iterdir())
    reference = Embedder.load(folder, precision, backend="onnxruntime").embed(paths)
    assert [p["max"][0] for p in engine.profiles] == [2, 4] and engine.precision_report["available"]
    if precision == "int8":
        assert engine.precision_report["quantized_gemms_not_quantized"] == []
    with Embedder.load(folder, precision, backend="tensorrt") as embedder:
        from ijepa_deploy.runtime.similarity import centered_cosine

        for batch in (1, 3, 4):
            assert centered_cosine(embedder.embed(paths, batch_size=batch), reference).min() >= 0.98
        embedder.backend.close()
        with pytest.raises(BackendError, match="closed"):
            embedder.backend.run(np.zeros((1, 3, 56, 56), np.float32))


@needs_gpu
@pytest.mark.gpu
def test_gpu_stripped_plan_and_cuda_graphs(tiny_artifacts, tmp_path, photos):
    from ijepa_deploy.exporter.tensorrt_build import build_engine_cli
    from ijepa_deploy.runtime.backends.tensorrt_backend import TensorRTBackend

    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    plan = build_engine_cli(folder, ["fp16"], strip_weights=True)[0]
    record = Manifest.load(folder).engines_for("fp16")[0]
    assert record.stripped and record.validation.passed  # gated after the refit from the ONNX
    backend = TensorRTBackend(plan, record, cuda_graphs=True)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 56, 56)).astype(np.float32)
    first = [backend.run(x)["embedding"] for _ in range(4)]  # plain, captured, replayed twice
    assert all(np.allclose(f, first[0], atol=1e-3) for f in first) and backend.warmup() >= 1
    backend.close()
