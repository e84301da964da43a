"""build-engine and register-engine end to end over the TensorRT stand-ins (tests/fake_tensorrt.py):
what is recorded (profiles, TF32, stripping, hardware level, CPU architecture, precision report),
what is refused (float GEMMs in a quantized plan, hardware-compatible fp8, TensorRT < 10), and that
TensorRT 10.3 builds. The gate itself is replaced here (the stand-in computes no I-JEPA); it is
tested against ONNX Runtime in test_tensorrt_build."""

from __future__ import annotations

import logging
import shutil

import pytest

from ijepa_deploy.exporter.errors import EngineBuildError
from ijepa_deploy.runtime import Manifest
from ijepa_deploy.runtime.backends.tensorrt_compat import cpu_arch

from . import fake_tensorrt as fake
from .test_tensorrt_report import BLOCKS, GEMMS, myelin_engine

SLUG = "nvidia-fake-gpu"


@pytest.fixture
def flow(monkeypatch, tiny_artifacts, tmp_path):
    trt, cudart = fake.install(monkeypatch)
    from ijepa_deploy.exporter import tensorrt_build, tensorrt_register

    passed = {"passed": True, "reference": "stand-in", "gate": {}}
    monkeypatch.setattr(tensorrt_build, "validate_plan", lambda *a, **k: dict(passed))
    monkeypatch.setattr(tensorrt_register, "validate_plan", lambda *a, **k: dict(passed))
    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    trt.inspector_json = myelin_engine({n: "int8" for n in GEMMS}, {b: True for b in BLOCKS})
    return trt, folder


def test_build_records_buckets_and_report(flow):
    trt, folder = flow
    from ijepa_deploy.exporter.tensorrt_build import build_engine_cli

    plans = build_engine_cli(folder, ["int8"], profiles="1-2,3-4")
    assert [p.name for p in plans] == [f"model_int8.{SLUG}.trt10.3.0.plan"]  # TensorRT 10.3 builds (JetPack 6)
    engine = Manifest.load(folder).engines_for("int8")[0]  # the manifest validates against its schema
    assert [p["max"][0] for p in engine.profiles] == [2, 4] and engine.tf32 and not engine.stripped
    assert engine.cpu_arch == cpu_arch() and engine.hardware_compatibility is None
    report = engine.precision_report
    assert report["gemm_dtypes"] == {"int8": 12} and report["attention"]["fused"] == 2
    assert len(trt.configs[-1].profiles) == 2 and "TF32" not in trt.configs[-1].cleared
    assert (folder / f"timing.{SLUG}.trt10.3.0.cache").read_bytes() == b"timing cache"


def test_float_gemms_refused_unless_allowed(flow, caplog):
    trt, folder = flow
    from ijepa_deploy.exporter.tensorrt_build import build_engine_cli

    trt.inspector_json = myelin_engine({n: "int8" for n in GEMMS} | {"blocks.0.mlp.fc2.MatMul": "fp16"},
                                       {b: True for b in BLOCKS})
    with pytest.raises(EngineBuildError, match="1 of 12 quantized GEMMs run in float.*--allow-float-gemms"):
        build_engine_cli(folder, ["int8"])
    assert not list(folder.glob("*.plan")) and Manifest.load(folder).engines == ()
    with caplog.at_level(logging.WARNING):
        build_engine_cli(folder, ["int8"], allow_float_gemms=True)
    assert "blocks.0.mlp.fc2.MatMul" in caplog.text
    assert Manifest.load(folder).engines[0].precision_report["quantized_gemms_not_quantized_count"] == 1


def test_a_quantized_plan_without_a_readable_report_is_refused(flow):
    trt, folder = flow
    from ijepa_deploy.exporter.tensorrt_build import build_engine_cli

    trt.inspector_json = "not JSON"
    with pytest.raises(EngineBuildError, match="cannot verify that the quantized GEMMs run quantized"):
        build_engine_cli(folder, ["int8"])
    assert not list(folder.glob("*.plan")) and Manifest.load(folder).engines == ()


def test_fp32_clears_tf32_and_stripped_plans_are_named(flow):
    trt, folder = flow
    from ijepa_deploy.exporter.tensorrt_build import build_engine_cli

    trt.inspector_json = myelin_engine({n: "fp32" for n in GEMMS}, {b: True for b in BLOCKS})
    build_engine_cli(folder, ["fp32"])
    assert "TF32" in trt.configs[-1].cleared and Manifest.load(folder).engines_for("fp32")[0].tf32 is False
    trt.inspector_json = myelin_engine({n: "fp16" for n in GEMMS}, {b: True for b in BLOCKS})
    plans = build_engine_cli(folder, ["fp16"], strip_weights=True)
    assert plans[0].name == f"model_fp16.{SLUG}.trt10.3.0.stripped.plan"
    assert {"STRIP_PLAN", "REFIT_IDENTICAL"} <= trt.configs[-1].flags
    build_engine_cli(folder, ["fp16"])  # the full plan lives beside the stripped one
    assert sorted(e.stripped for e in Manifest.load(folder).engines_for("fp16")) == [False, True]


def test_old_tensorrt_is_refused(flow, monkeypatch):
    trt, folder = flow
    from ijepa_deploy.exporter.tensorrt_build import build_engine_cli

    monkeypatch.setattr(trt, "__version__", "9.3.0.1")
    with pytest.raises(EngineBuildError, match="too old.*JetPack 6 ships 10.3"):
        build_engine_cli(folder, ["fp16"])


def test_register_reads_profiles_hardware_level_and_arch(flow):
    trt, folder = flow
    from ijepa_deploy.exporter.tensorrt_register import register_engine

    profiles = [((1, 3, 28, 28), (2, 3, 56, 56), (2, 3, 112, 112)), ((4, 3, 28, 28), (4, 3, 56, 56), (4, 3, 112, 112))]
    plan = folder / f"model_int8.{SLUG}.trt10.3.0.plan"
    plan.write_bytes(fake.plan_bytes(profiles, hardware="AMPERE_PLUS"))
    register_engine(folder, plan)
    engine = Manifest.load(folder).engines_for("int8")[0]
    assert engine.hardware_compatibility == "ampere_plus" and engine.cpu_arch == cpu_arch()
    assert [p["max"] for p in engine.profiles] == [[2, 3, 112, 112], [4, 3, 112, 112]]
    assert engine.tensorrt_version == "10.3.0.26" and engine.precision_report["gemm_dtypes"] == {"int8": 12}
    fp8 = folder / f"model_fp8.{SLUG}.trt10.3.0.plan"
    fp8.write_bytes(fake.plan_bytes(profiles, hardware="AMPERE_PLUS"))
    with pytest.raises(EngineBuildError, match="hardware-compatible"):
        register_engine(folder, fp8)
    stripped = folder / f"model_int8.{SLUG}.trt10.3.0.stripped.plan"
    stripped.write_bytes(fake.plan_bytes(profiles))
    register_engine(folder, stripped)
    assert sorted(e.stripped for e in Manifest.load(folder).engines_for("int8")) == [False, True]
