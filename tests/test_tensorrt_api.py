"""Every TensorRT and cuda-python name our code uses exists in the real bindings: TensorRT 10.3
(JetPack 6), 10.13 and 11.4, cuda-python 12 and 13 (scripts/setup.sh fetches them, never installs
them). Names are collected from the source by AST, so a new call is checked the day it is written."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINDINGS = Path(sys.prefix) / "share" / "tensorrt-bindings"
CUDA_BINDINGS = Path(sys.prefix) / "share" / "cuda-bindings"
TRT_VERSIONS = ["10.3.0", "10.13.3.9", "11.4.0.106"]
CUDA_VERSIONS = ["12.9.10", "13.5.0"]
TRT_FILES = [ROOT / "exporter" / "tensorrt_build.py", ROOT / "exporter" / "tensorrt_register.py",
             ROOT / "runtime" / "backends" / "tensorrt_backend.py"]
CUDA_FILES = [ROOT / "runtime" / "backends" / "tensorrt_cuda.py", ROOT / "runtime" / "backends" / "tensorrt_backend.py",
              ROOT / "bench" / "gpu_sections.py"]
# Names our TensorRT code holds TensorRT objects in: every attribute read on them is TensorRT API.
TRT_OBJECTS = {"trt", "self._trt", "backend._trt", "builder", "network", "parser", "config", "profile", "engine", "self.engine",
               "runtime", "self._runtime", "inspector", "ctx", "cache", "refitter", "self.context"}
# Everything the features of issue 21 rely on (a rename in the source would drop a name silently).
REQUIRED = {"create_network", "parse_from_file", "set_timing_cache", "execute_async_v3", "engine_host_code_allowed",
            "set_input_shape", "get_tensor_dtype", "nptype", "STRONGLY_TYPED", "TF32", "clear_flag",
            "set_optimization_profile_async", "num_optimization_profiles", "get_tensor_profile_shape",
            "add_optimization_profile", "Refitter", "OnnxParserRefitter", "refit_from_file", "refit_cuda_engine",
            "STRIP_PLAN", "REFIT_IDENTICAL", "hardware_compatibility_level", "AMPERE_PLUS", "create_engine_inspector",
            "get_engine_information", "JSON", "DETAILED", "VERSION_COMPATIBLE", "ON_PROFILE_CHANGE",
            "ExecutionContextAllocationStrategy"}


def _chain(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _chain(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def trt_names_used() -> set[str]:
    names = set()

    def on_trt(owner: str | None) -> bool:
        return owner in TRT_OBJECTS or (owner or "").startswith("trt.")

    for path in TRT_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and on_trt(_chain(node.value)):
                names.add(node.attr)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and on_trt(_chain(node.args[0]))):
                names.add(node.args[1].value)
    return names


def cuda_names_used() -> set[str]:
    """Every cudaXxx attribute read anywhere in the CUDA files (functions, enums, enum members)."""
    return {node.attr for path in CUDA_FILES if path.is_file() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr.startswith("cuda") and node.attr[4:5].isupper()}


def _binding_has(version: str, name: str) -> bool:
    folder = BINDINGS / version / "tensorrt_bindings"
    return (name.encode() + b"\0") in (folder / "tensorrt.so").read_bytes() or \
        f"def {name}(" in (folder / "__init__.py").read_text() or name in ("__version__",)


@pytest.mark.parametrize("version", TRT_VERSIONS)
def test_every_tensorrt_name_exists_in_the_bindings(version):
    if not (BINDINGS / version / "tensorrt_bindings" / "tensorrt.so").is_file():
        pytest.skip(f"the tensorrt-cu12-bindings {version} wheel was not downloaded (scripts/setup.sh fetches it)")
    used = trt_names_used()
    assert REQUIRED <= used, sorted(REQUIRED - used)
    missing = sorted(n for n in used if not _binding_has(version, n))
    assert missing == [], f"not in TensorRT {version}: {missing}"
    assert not _binding_has(version, "set_timing_cachez")  # the check can fail


def test_a_name_missing_from_10_3_is_caught():
    """SAME_COMPUTE_CAPABILITY came after 10.3: were our code to use it, the 10.3 check would fail."""
    if not (BINDINGS / "10.3.0" / "tensorrt_bindings" / "tensorrt.so").is_file():
        pytest.skip("the tensorrt-cu12-bindings 10.3.0 wheel was not downloaded")
    assert not _binding_has("10.3.0", "SAME_COMPUTE_CAPABILITY") and _binding_has("10.13.3.9", "SAME_COMPUTE_CAPABILITY")
    assert "SAME_COMPUTE_CAPABILITY" not in trt_names_used()


def test_removed_apis_are_not_used():
    """TensorRT 11 removed weak typing, calibrators and the bindings API: none of it may appear."""
    used = trt_names_used()
    for removed in ("FP16", "INT8", "BF16", "FP8", "int8_calibrator", "IInt8EntropyCalibrator2", "get_binding_index",
                    "execute_v2", "set_precision", "OBEY_PRECISION_CONSTRAINTS", "REFIT"):
        assert removed not in used


@pytest.mark.parametrize("version", CUDA_VERSIONS)
def test_every_cuda_name_exists_in_cuda_python(version):
    module = CUDA_BINDINGS / version / "cuda" / "bindings" / "runtime.so"
    if not module.is_file():
        pytest.skip(f"the cuda-bindings {version} wheel was not downloaded (scripts/setup.sh fetches it)")
    used = cuda_names_used()
    assert {"cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate", "cudaGraphLaunch",
            "cudaStreamCaptureModeThreadLocal", "cudaMallocHost", "cudaMemcpyAsync"} <= used
    data = module.read_bytes()
    missing = sorted(n for n in used if n.encode() not in data)
    assert missing == [], f"not in cuda-python {version}: {missing}"
    assert b"cudaStreamBeginCapturez" not in data
