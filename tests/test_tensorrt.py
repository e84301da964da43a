"""TensorRT: everything that needs no GPU runs here for real (API names against the real bindings,
compatibility rules, trtexec script, plan registration checks, Triton repositories); the GPU path
skips with its reason."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import numpy as np
import pytest

from ijepa_deploy.exporter.errors import ExportError
from ijepa_deploy.contract.naming import BUILD_SCRIPT_NAME as SCRIPT_NAME
from ijepa_deploy.contract.naming import gpu_slug, plan_name
from ijepa_deploy.exporter.trtexec_script import profile_shapes, render_script, trtexec_command
from ijepa_deploy.exporter.triton_repo import write_triton_repo
from ijepa_deploy.runtime import BackendError, Embedder, Manifest
from ijepa_deploy.runtime.backends.tensorrt_backend import (check_engine_compat, engine_compat_problem,
                                                            select_engine, tensorrt_unavailable_reason)
from ijepa_deploy.contract.errors import IntegrityError, ManifestError

from .helpers import one_error_line, run_module

ROOT = Path(__file__).resolve().parents[1]
TRT_REASON = tensorrt_unavailable_reason()
needs_gpu = pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT GPU tests need TensorRT and a CUDA device: "
                                                            f"{TRT_REASON}")
no_trt = pytest.mark.skipif(TRT_REASON is None, reason="TensorRT and a GPU are present: the no-TensorRT path does not apply")

# ------------------------------------------------------------------------- the API names


BINDINGS = Path(sys.prefix) / "share" / "tensorrt-bindings"
TRT_FILES = [ROOT / "exporter" / "tensorrt_build.py", ROOT / "runtime" / "backends" / "tensorrt_backend.py"]
# Names our TensorRT code holds TensorRT objects in: every attribute read on them is TensorRT API.
TRT_OBJECTS = {"trt", "self._trt", "builder", "network", "parser", "config", "profile", "engine", "self.engine",
               "runtime", "self._runtime", "inspector", "ctx", "cache"}


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


def _binding_has(version: str, name: str) -> bool:
    folder = BINDINGS / version / "tensorrt_bindings"
    return (name.encode() + b"\0") in (folder / "tensorrt.so").read_bytes() or \
        f"def {name}(" in (folder / "__init__.py").read_text() or name in ("__version__",)


@pytest.mark.parametrize("version", ["10.13.3.9", "11.4.0.106"])
def test_every_tensorrt_name_exists_in_the_bindings(version):
    if not (BINDINGS / version / "tensorrt_bindings" / "tensorrt.so").is_file():
        pytest.skip(f"the tensorrt-cu12-bindings {version} wheel was not downloaded (scripts/setup.sh fetches it)")
    used = trt_names_used()
    assert {"create_network", "parse_from_file", "set_timing_cache", "execute_async_v3", "engine_host_code_allowed",
            "set_input_shape", "get_tensor_dtype", "nptype", "STRONGLY_TYPED", "TF32", "clear_flag"} <= used
    missing = sorted(n for n in used if not _binding_has(version, n))
    assert missing == [], f"not in TensorRT {version}: {missing}"
    assert not _binding_has(version, "set_timing_cachez")  # the check can fail


def test_removed_apis_are_not_used():
    """TensorRT 11 removed weak typing, calibrators and the bindings API: none of it may appear."""
    used = trt_names_used()
    for removed in ("FP16", "INT8", "int8_calibrator", "IInt8EntropyCalibrator2", "get_binding_index", "execute_v2",
                    "set_precision", "OBEY_PRECISION_CONSTRAINTS"):
        assert removed not in used


# ------------------------------------------------------------------------- compatibility rules


ENGINE = {"file": "model_fp16.nvidia-a100.trt10.16.0.plan", "tensorrt_version": "10.16.0", "compute_capability": "8.0",
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


@pytest.mark.parametrize("built,here,ok", [
    ("10.16.0", "10.17.2", True),   # later minor of the same major
    ("10.16.0", "11.4.0", True),    # TensorRT documents 10 -> 11 for version-compatible plans
    ("8.6.1", "10.13.0", True),     # and 8 -> 10
    ("11.4.0", "10.16.0", False),   # never backwards
    ("10.16.0", "10.12.0", False),
    ("8.6.1", "11.4.0", False),     # no other cross-major pair
])
def test_version_compatible_plans(built, here, ok):
    entry = {**ENGINE, "tensorrt_version": built, "version_compatible": True}
    assert (engine_compat_problem(entry, {"tensorrt_version": here, "compute_capability": "8.0"}) is None) == ok


def test_hardware_compatibility_and_slug():
    amp = {**ENGINE, "hardware_compatibility": "ampere_plus"}
    assert engine_compat_problem(amp, {"tensorrt_version": "10.16.0", "compute_capability": "9.0"}) is None
    assert engine_compat_problem(amp, {"tensorrt_version": "10.16.0", "compute_capability": "7.5"})
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert plan_name("fp16", "nvidia-h100", "10.16.0.72") == "model_fp16.nvidia-h100.trt10.16.0.plan"


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


# ------------------------------------------------------------------------- trtexec script


def test_trtexec_commands_tensorrt_10_and_11(tiny_artifacts):
    manifest = Manifest.load(tiny_artifacts)
    assert profile_shapes(manifest) == {"min": (1, 3, 28, 28), "opt": (4, 3, 56, 56), "max": (4, 3, 112, 112)}
    v10 = trtexec_command(manifest, "fp16", 10, 12, gpu_slug="nvidia-a100", trt_version="10.12.0")
    v11 = trtexec_command(manifest, "int8", 11, 4, gpu_slug="orin", trt_version="11.4.0")
    assert v10[:3] == ["trtexec", "--onnx=model_fp16.onnx", "--stronglyTyped"]
    assert "--saveEngine=model_fp16.nvidia-a100.trt10.12.0.plan" in v10
    assert "--timingCacheFile=timing.nvidia-a100.trt10.12.0.cache" in v10
    assert "--minShapes=pixel_values:1x3x28x28" in v10 and "--maxShapes=pixel_values:4x3x112x112" in v10
    assert "--stronglyTyped" not in v11 and "--onnx=model_int8.onnx" in v11
    assert "--noTF32" in trtexec_command(manifest, "fp32", 11) and "--noTF32" not in v10
    for cmd in (v10, v11):
        assert not {"--fp16", "--int8", "--best", "--bf16", "--fp8"} & set(cmd)
    with pytest.raises(ValueError, match="10.12"):
        trtexec_command(manifest, "fp16", 10, 8)
    with pytest.raises(ValueError, match="not for TensorRT"):
        trtexec_command(manifest, "int8-cpu", 11)


def test_build_script_is_in_every_folder_and_valid_bash(tiny_artifacts):
    script = (tiny_artifacts / SCRIPT_NAME).read_text()
    assert script == render_script(Manifest.load(tiny_artifacts))
    assert (tiny_artifacts / SCRIPT_NAME).stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(tiny_artifacts / SCRIPT_NAME)]).returncode == 0
    assert "int8-cpu)" not in script and "--fp16" not in script
    for precision in ("fp16)", "int8)", "fp32)", "fp8)"):
        assert precision in script


def _stand_ins(tmp_path: Path, cc: str = "9.0") -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "trtexec").write_text('#!/bin/sh\nif [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec '
                                     '[TensorRT v${TRT_VER}] # trtexec"; exit 0; fi\necho "$@" >> "$LOG"\n'
                                     'for a in "$@"; do case "$a" in --saveEngine=*) echo plan > "${a#--saveEngine=}";; '
                                     'esac; done\n')
    (bin_dir / "nvidia-smi").write_text(f'#!/bin/sh\ncase "$*" in *compute_cap*) echo "{cc}";; *) echo "NVIDIA H100 '
                                        'PCIe";; esac\n')
    (bin_dir / "ijepa-export").write_text('#!/bin/sh\necho "$@" >> "$REGISTER_LOG"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(tmp_path / "log"), "REGISTER_LOG": str(tmp_path / "reg")}


@pytest.mark.parametrize("ver,strongly", [("101600", True), ("110400", False)])
def test_build_script_runs_against_stand_ins(tiny_artifacts, tmp_path, ver, strongly):
    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    env = {**_stand_ins(tmp_path), "TRT_VER": ver}
    out = subprocess.run(["bash", str(folder / SCRIPT_NAME), "fp16", "fp8"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "log").read_text().splitlines()
    assert len(lines) == 2 and all(("--stronglyTyped" in line) == strongly for line in lines)
    tag = "trt10.16.0" if ver == "101600" else "trt11.4.0"
    assert f"model_fp8.nvidia-h100-pcie.{tag}.plan" in lines[1]
    registered = (tmp_path / "reg").read_text().splitlines()  # each plan is recorded (and gated) at once
    assert registered == [f"register-engine --artifacts . model_fp16.nvidia-h100-pcie.{tag}.plan --precision fp16",
                          f"register-engine --artifacts . model_fp8.nvidia-h100-pcie.{tag}.plan --precision fp8"]


def test_build_script_refuses_fp8_below_ada_and_old_tensorrt(tiny_artifacts, tmp_path):
    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    env = {**_stand_ins(tmp_path, cc="8.6"), "TRT_VER": "101600"}
    out = subprocess.run(["bash", str(folder / SCRIPT_NAME), "fp8"], env=env, capture_output=True, text=True)
    assert out.returncode == 1 and "fp8 needs compute capability >= 8.9; this GPU has 8.6" in out.stderr
    out = subprocess.run(["bash", str(folder / SCRIPT_NAME)], env={**env, "TRT_VER": "100800"}, capture_output=True,
                         text=True)
    assert out.returncode == 1 and "need >= 10.12" in out.stderr


# ------------------------------------------------------------------------- commands without TensorRT


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


def test_cuda_python_is_pinned_to_a_cuda_major():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "cuda-python>=12.6,<13" in extras["tensorrt-cu12"] and "cuda-python>=13,<14" in extras["tensorrt-cu13"]
    assert not any(d.startswith("cuda-python") and "<" not in d for deps in extras.values() for d in deps)


# ------------------------------------------------------------------------- Triton


def _parse_pbtxt(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_repository_onnx(tiny_artifacts, tmp_path):
    repo = write_triton_repo(tiny_artifacts, tmp_path / "repo", "fp16")
    enc = _parse_pbtxt(repo / "ijepa_tiny_encoder" / "config.pbtxt")
    assert enc.backend == "onnxruntime" and enc.max_batch_size == 4
    assert enc.instance_group[0].kind == enc.instance_group[0].KIND_CPU  # no plan: CPU instances by default
    assert [i.name for i in enc.input] == ["pixel_values"] and list(enc.input[0].dims) == [3, -1, -1]
    assert [o.name for o in enc.output] == ["last_hidden_state", "embedding"] and list(enc.output[1].dims) == [64]
    pre = _parse_pbtxt(repo / "ijepa_tiny_preprocess" / "config.pbtxt")
    assert pre.backend == "python" and list(pre.output[0].dims) == [3, 56, 56]
    ens = _parse_pbtxt(repo / "ijepa_tiny" / "config.pbtxt")
    assert ens.platform == "ensemble" and [s.model_name for s in ens.ensemble_scheduling.step] == [
        "ijepa_tiny_preprocess", "ijepa_tiny_encoder"]
    assert (repo / "ijepa_tiny_encoder" / "1" / "model.onnx").read_bytes() == (tiny_artifacts / "model_fp16.onnx").read_bytes()
    assert (repo / "ijepa_tiny_preprocess" / "1" / "ijepa_deploy" / "runtime" / "preprocessing.py").is_file()
    assert not list(repo.glob(".*"))  # no staging folder left


def test_triton_repository_plan_respects_profile_and_notes(tiny_artifacts, tmp_path):
    folder = _with_engines(tiny_artifacts, tmp_path, [_engine(max_batch=3, version_compatible=True)])
    repo = write_triton_repo(folder, tmp_path / "repo", "fp16")
    text = (repo / "ijepa_tiny_encoder" / "config.pbtxt").read_text()
    enc = _parse_pbtxt(repo / "ijepa_tiny_encoder" / "config.pbtxt")
    assert enc.platform == "tensorrt_plan" and enc.max_batch_size == 3
    assert list(enc.dynamic_batching.preferred_batch_size) == [3]
    assert "TensorRT 10.16.0" in text and "--backend-config=tensorrt,version-compatible=true" in text
    assert _parse_pbtxt(repo / "ijepa_tiny" / "config.pbtxt").max_batch_size == 3
    assert (repo / "ijepa_tiny_encoder" / "1" / "model.plan").read_bytes().startswith(b"plan bytes")
    with pytest.raises(ExportError, match="runs on a GPU only"):
        write_triton_repo(folder, tmp_path / "repo2", "fp16", instance_kind="KIND_CPU")
    with pytest.raises(ExportError, match="no fp16 plan built for GPU 'L4'"):
        write_triton_repo(folder, tmp_path / "repo3", "fp16", gpu="L4")


def test_triton_repository_replaces_stale_files_and_stays_inside(tiny_artifacts, tmp_path):
    repo = tmp_path / "repo"
    write_triton_repo(tiny_artifacts, repo, "fp16")
    (repo / "ijepa_tiny_encoder" / "1" / "stale.onnx.data").write_bytes(b"old")
    (repo / "other_model").mkdir()  # someone else's model in the same repository stays
    write_triton_repo(tiny_artifacts, repo, "fp32")
    assert not (repo / "ijepa_tiny_encoder" / "1" / "stale.onnx.data").exists()
    assert (repo / "other_model").is_dir()
    assert (repo / "ijepa_tiny_encoder" / "1" / "model.onnx").read_bytes() == (tiny_artifacts / "model_fp32.onnx").read_bytes()
    # a manifest pointing outside its folder is refused before anything is written
    folder = tmp_path / "evil"
    shutil.copytree(tiny_artifacts, folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["artifacts"]["fp32"]["data_file"] = "../../x"
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError):
        write_triton_repo(folder, tmp_path / "repo4", "fp32")
    assert not (tmp_path / "x").exists() and not (tmp_path / "repo4").exists()


def test_triton_repository_failure_changes_nothing(tiny_artifacts, tmp_path):
    repo = tmp_path / "repo"
    write_triton_repo(tiny_artifacts, repo, "fp32")
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_artifacts, folder)
    data = bytearray((folder / "model_fp32.onnx").read_bytes())
    data[1000] ^= 0xFF
    (folder / "model_fp32.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        write_triton_repo(folder, repo, "fp32")
    assert {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before


def test_triton_preprocess_model_fails_only_the_bad_request(tiny_artifacts, tmp_path):
    """The generated Python model, run with a minimal stand-in for Triton's pb_utils module."""
    repo = write_triton_repo(tiny_artifacts, tmp_path / "repo", "fp32")
    version = repo / "ijepa_tiny_preprocess" / "1"

    class Tensor:
        def __init__(self, name, data):
            self.name, self.data = name, data

        def as_numpy(self):
            return self.data

    class Response:
        def __init__(self, tensors=None, error=None):
            self.tensors, self.error = tensors, error

    stub = types.ModuleType("triton_python_backend_utils")
    stub.Tensor, stub.InferenceResponse, stub.TritonError = Tensor, Response, str
    stub.get_input_tensor_by_name = lambda request, name: request[name]
    sys.modules["triton_python_backend_utils"] = stub
    try:
        code = compile((version / "model.py").read_text(), str(version / "model.py"), "exec")
        namespace = {"__file__": str(version / "model.py"), "__name__": "triton_model"}
        exec(code, namespace)
        model = namespace["TritonPythonModel"]()
        model.initialize({})
        good = (ROOT / "tests").parent  # any real image bytes
        from .helpers import skimage_data_dir

        photo = (skimage_data_dir() / "coffee.png").read_bytes()
        requests = [{"IMAGE": Tensor("IMAGE", np.array([[photo]], dtype=object))},
                    {"IMAGE": Tensor("IMAGE", np.array([[b"not an image"]], dtype=object))}]
        responses = model.execute(requests)
    finally:
        del sys.modules["triton_python_backend_utils"]
        sys.path[:] = [p for p in sys.path if p != str(version)]
    assert responses[0].error is None and responses[0].tensors[0].data.shape == (1, 3, 56, 56)
    assert responses[1].tensors is None and "cannot read image" in responses[1].error


# ------------------------------------------------------------------------- on a GPU


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_gpu_build_register_and_run(tiny_artifacts, tmp_path, photos, precision):
    from ijepa_deploy.exporter.tensorrt_build import build_engine_cli, register_engine

    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    plans = build_engine_cli(folder, [precision])
    manifest = Manifest.load(folder)
    engine = manifest.engines_for(precision)[0]
    assert engine.validation["passed"] and (folder / engine.timing_cache).stat().st_size > 0
    assert register_engine(folder, plans[0], precision=precision) == plans[0]  # re-registering replaces the record
    assert len(Manifest.load(folder).engines_for(precision)) == 1
    paths = sorted(photos["eval"].iterdir())
    reference = Embedder.load(folder, precision, backend="onnxruntime").embed(paths)
    with Embedder.load(folder, precision, backend="tensorrt") as embedder:
        from ijepa_deploy.runtime.similarity import centered_cosine

        for batch in (1, 3, 4):
            assert centered_cosine(embedder.embed(paths, batch_size=batch), reference).min() >= 0.98
        embedder.backend.close()
        with pytest.raises(BackendError, match="closed"):
            embedder.backend.run(np.zeros((1, 3, 56, 56), np.float32))
