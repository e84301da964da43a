"""Triton model repositories: the encoder config (plan or ONNX), instance groups per optimization
profile, CUDA graphs per batch bucket, model warm-up, the TensorRT version a plan needs, and the
generated preprocessing model; configs are parsed with Triton's own protobuf schema (tritonclient)."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from ijepa_deploy.exporter.errors import ExportError
from ijepa_deploy.exporter.triton_repo import write_triton_repo
from ijepa_deploy.contract.errors import IntegrityError, ManifestError

from .test_tensorrt_cli import ROOT, _engine, _with_engines


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
    assert list(enc.dynamic_batching.preferred_batch_size) == [2, 3]  # the profile's opt and max batch
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


TWO_BUCKETS = [{"input": "pixel_values", "min": [1, 3, 28, 28], "opt": [2, 3, 56, 56], "max": [2, 3, 112, 112]},
               {"input": "pixel_values", "min": [4, 3, 28, 28], "opt": [8, 3, 56, 56], "max": [8, 3, 112, 112]}]


def test_triton_plan_with_buckets_graphs_warmup_and_profiles(tiny_artifacts, tmp_path):
    folder = _with_engines(tiny_artifacts, tmp_path, [_engine(trt="10.13.3.9", profiles=TWO_BUCKETS)])
    repo = write_triton_repo(folder, tmp_path / "repo", "fp16", target_tensorrt="10.13.3")
    enc = _parse_pbtxt(repo / "ijepa_tiny_encoder" / "config.pbtxt")
    assert enc.max_batch_size == 8 and list(enc.dynamic_batching.preferred_batch_size) == [2, 8]
    assert [(g.name, list(g.profile), g.count) for g in enc.instance_group] == [("profile_0", ["0"], 1),
                                                                                ("profile_1", ["1"], 1)]
    assert enc.optimization.cuda.graphs
    specs = [(s.batch_size, s.graph_lower_bound.batch_size, list(s.input["pixel_values"].dim))
             for s in enc.optimization.cuda.graph_spec]
    assert specs == [(2, 1, [3, 56, 56]), (8, 4, [3, 56, 56])]  # one graph serves each whole bucket
    warm = [(w.batch_size, list(w.inputs["pixel_values"].dims), w.inputs["pixel_values"].random_data)
            for w in enc.model_warmup]
    assert warm == [(2, [3, 56, 56], True), (8, [3, 56, 56], True)]


def test_triton_refuses_a_plan_of_another_tensorrt(tiny_artifacts, tmp_path, monkeypatch):
    folder = _with_engines(tiny_artifacts, tmp_path, [_engine(trt="11.4.0.106")])
    with pytest.raises(ExportError, match="no fp16 plan runs on TensorRT 10.13.*11.4.0.106.*build_engines.sh"):
        write_triton_repo(folder, tmp_path / "repo", "fp16", target_tensorrt="10.13")
    monkeypatch.setenv("TRT_VERSION", "10.13.3.9")  # what an NGC container sets
    with pytest.raises(ExportError, match="no fp16 plan runs on TensorRT 10.13.3.9"):
        write_triton_repo(folder, tmp_path / "repo", "fp16")
    assert not (tmp_path / "repo").exists()
    write_triton_repo(folder, tmp_path / "repo", "fp16", target_tensorrt="11.4.0")
    assert write_triton_repo(folder, tmp_path / "onnx", "fp16", prefer_plan=False)  # the ONNX file serves anywhere
    with pytest.raises(ExportError, match="not a version"):
        write_triton_repo(folder, tmp_path / "repo", "fp16", target_tensorrt="latest")


def test_triton_version_compatible_plan_serves_later_versions(tiny_artifacts, tmp_path):
    from ijepa_deploy.exporter.triton_repo import serves
    from ijepa_deploy.contract.manifest import Engine

    base = dict(precision="fp16", file="f.plan", sha256="0" * 64, bytes=1, gpu_name="g", compute_capability="9.0",
                profiles=TWO_BUCKETS)
    vc = Engine(tensorrt_version="10.8.0.43", version_compatible=True, **base)
    assert serves(vc, "10.13.3") and serves(vc, "11.4") and not serves(vc, "10.3")
    exact = Engine(tensorrt_version="10.13.3.9", **base)
    assert serves(exact, "10.13") and serves(exact, "10.13.3.9") and not serves(exact, "10.13.2")
