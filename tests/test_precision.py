"""FP16 and INT8 artifacts: typed graphs, gates on held-out photos, and the Q/DQ lint."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from ijepa_deploy.exporter.qdq_lint import lint_file, lint_model
from ijepa_deploy.reference_model import load_checkpoint
from ijepa_deploy.runtime import Embedder


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_fp16_artifact_is_typed_and_passes_gate(tiny_artifacts):
    art = _manifest(tiny_artifacts)["artifacts"]["fp16"]
    v = art["validation"]
    assert v["passed"] and v["worst_cosine"] >= 0.999 and v["gate"]["min_cosine"] == 0.999
    assert all(c["inputs"].startswith("images: ") for c in v["checks"])  # held-out photographs
    path = tiny_artifacts / "model_fp16.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True, check_type=True)
    types = {x.name: x.type.tensor_type.elem_type for x in [*model.graph.value_info, *model.graph.input,
                                                          *model.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    assert all(x.type.tensor_type.elem_type == TensorProto.FLOAT for x in [*model.graph.input, *model.graph.output])
    for node in model.graph.node:
        if node.op_type == "LayerNormalization" or node.op_type == "Resize":
            assert types[node.input[0]] == TensorProto.FLOAT, node.name  # float32 islands
        if node.op_type in ("MatMul", "Softmax", "Erf"):
            assert types[node.input[0]] == TensorProto.FLOAT16, node.name
    assert v["matmul_dtypes"] == {"float16": 16}
    inits = {i.name: i.data_type for i in model.graph.initializer}
    weights = [inits[n.input[1]] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    assert len(weights) == 12 and set(weights) == {TensorProto.FLOAT16}


def test_int8_artifact_passes_lint_and_gate(tiny_artifacts):
    art = _manifest(tiny_artifacts)["artifacts"]["int8"]
    assert art["validation"]["passed"] and art["validation"]["worst_cosine"] >= 0.99
    assert art["calibration"]["method"] == "minmax" and art["calibration"]["count"] == 6
    held_out = {name for c in art["validation"]["checks"] for name in c["inputs"][len("images: "):].split(", ")}
    assert held_out and not held_out & set(art["calibration"]["images"])
    assert lint_file(tiny_artifacts / "model_int8.onnx") == []
    model = onnx.load(str(tiny_artifacts / "model_int8.onnx"))
    quantized = {c.name for n in model.graph.node if n.op_type == "DequantizeLinear"
                 for c in model.graph.node if n.output[0] in c.input}
    assert quantized == {f"blocks.{i}.{r}.MatMul" for i in range(2)
                         for r in ("attn.query", "attn.key", "attn.value", "attn.proj", "mlp.fc1", "mlp.fc2")}


@pytest.mark.parametrize("precision,gate", [("fp16", 0.999), ("int8", 0.99), ("int8-cpu", 0.99)])
def test_runtime_runs_precisions_within_gate(tiny_artifacts, hf_dir, photos, precision, gate):
    paths = sorted(photos["eval"].iterdir())
    with Embedder.load(tiny_artifacts, precision=precision) as embedder:
        got = embedder.embed(paths)
        pixels = embedder.preprocessor(paths)
    with torch.no_grad():
        ref = load_checkpoint(hf_dir).model(torch.from_numpy(pixels)).embedding.numpy()
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= gate


# ------------------------------------------------------------------------- lint on broken copies


@pytest.fixture(scope="module")
def int8_model(tiny_artifacts) -> onnx.ModelProto:
    return onnx.load(str(tiny_artifacts / "model_int8.onnx"))


def _nodes(model, op):
    return [n for n in model.graph.node if n.op_type == op]


def _init(model, name):
    return next(i for i in model.graph.initializer if i.name == name)


def _set(model, name, array):
    _init(model, name).CopyFrom(numpy_helper.from_array(array, name))


def _weight_dq(model):
    inits = {i.name for i in model.graph.initializer}
    return next(n for n in _nodes(model, "DequantizeLinear") if n.input[0] in inits)


def _rules(model) -> set[str]:
    return {v.rule for v in lint_model(model)}


def test_lint_nonzero_zero_point(int8_model):
    m = copy.deepcopy(int8_model)
    zp = _nodes(m, "QuantizeLinear")[0].input[2]
    _set(m, zp, np.array(3, dtype=np.int8))
    assert "zero-point" in _rules(m)


def test_lint_uint8_zero_point(int8_model):
    m = copy.deepcopy(int8_model)
    zp = _nodes(m, "QuantizeLinear")[0].input[2]
    _set(m, zp, np.array(0, dtype=np.uint8))
    assert any("must be INT8" in str(v) for v in lint_model(m))


def test_lint_missing_zero_point(int8_model):
    m = copy.deepcopy(int8_model)
    q = _nodes(m, "QuantizeLinear")[0]
    del q.input[2]
    assert any("defaults to UINT8" in str(v) for v in lint_model(m))


def test_lint_negative_scale(int8_model):
    m = copy.deepcopy(int8_model)
    scale = _nodes(m, "QuantizeLinear")[0].input[1]
    _set(m, scale, -np.abs(numpy_helper.to_array(_init(m, scale))))
    assert "scale" in _rules(m)


def test_lint_wrong_weight_axis_and_per_tensor(int8_model):
    m = copy.deepcopy(int8_model)
    dq = _weight_dq(m)
    for a in dq.attribute:
        if a.name == "axis":
            a.i = 0
    assert any(v.rule == "axis" and "output-channel axis is 1" in v.message for v in lint_model(m))
    m = copy.deepcopy(int8_model)
    dq = _weight_dq(m)
    _set(m, dq.input[1], np.array(0.01, dtype=np.float32))
    assert any(v.rule == "axis" and "per tensor" in v.message for v in lint_model(m))


def _add_qdq_before(m, node, index):
    """Insert Q -> DQ (int8, zero point 0) in front of `node.input[index]`."""
    src = node.input[index]
    m.graph.initializer.extend([numpy_helper.from_array(np.array(0.02, np.float32), f"{node.name}.s"),
                                numpy_helper.from_array(np.array(0, np.int8), f"{node.name}.z")])
    m.graph.node.extend([
        helper.make_node("QuantizeLinear", [src, f"{node.name}.s", f"{node.name}.z"], [f"{node.name}.q"], name=f"{node.name}.Q"),
        helper.make_node("DequantizeLinear", [f"{node.name}.q", f"{node.name}.s", f"{node.name}.z"], [f"{node.name}.dq"],
                         name=f"{node.name}.DQ")])
    node.input[index] = f"{node.name}.dq"


@pytest.mark.parametrize("target,expected", [
    ("LayerNormalization", "LayerNormalization takes a dequantized input"),
    ("Softmax", "Softmax takes a dequantized input"),
    ("attention", "attention MatMul (two activations)"),
])
def test_lint_forbidden_placements(int8_model, target, expected):
    m = copy.deepcopy(int8_model)
    if target == "attention":
        node = next(n for n in _nodes(m, "MatMul") if n.name.endswith("attn.scores.MatMul"))
    else:
        node = _nodes(m, target)[0]
    _add_qdq_before(m, node, 0)
    if target == "attention":
        _add_qdq_before(m, node, 1)
    assert any(expected in str(v) for v in lint_model(m)), [str(v) for v in lint_model(m)]


def test_lint_output_quantization(int8_model):
    m = copy.deepcopy(int8_model)
    fc1 = next(n for n in _nodes(m, "MatMul") if n.name == "blocks.0.mlp.fc1.MatMul")
    consumer = next(n for n in m.graph.node if fc1.output[0] in n.input)
    _add_qdq_before(m, consumer, list(consumer.input).index(fc1.output[0]))
    assert any(v.rule == "output" for v in lint_model(m))


def test_lint_fc1_without_fc2_and_opset(int8_model):
    m = copy.deepcopy(int8_model)
    fc2 = next(n for n in _nodes(m, "MatMul") if n.name == "blocks.1.mlp.fc2.MatMul")
    producers = {o: n for n in m.graph.node for o in n.output}
    for i, name in enumerate(list(fc2.input)):
        dq = producers.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear":
            fc2.input[i] = producers[dq.input[0]].input[0] if dq.input[0] in producers else dq.input[0]
    m.opset_import[0].version = 12
    rules = _rules(m)
    assert {"fc-pair", "opset"} <= rules


def test_lint_cli(tiny_artifacts, tmp_path):
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "ijepa_deploy.exporter", "lint", str(tiny_artifacts / "model_int8.onnx")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "Q/DQ lint passed" in ok.stdout
    m = onnx.load(str(tiny_artifacts / "model_int8.onnx"))
    _set(m, _nodes(m, "QuantizeLinear")[0].input[2], np.array(5, dtype=np.int8))
    onnx.save(m, str(tmp_path / "bad.onnx"))
    bad = subprocess.run([sys.executable, "-m", "ijepa_deploy.exporter", "lint", str(tmp_path / "bad.onnx")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "[zero-point]" in bad.stdout and "2 violation(s)" in bad.stderr  # Q and DQ share the zero point


def test_int8_cpu_artifact_uses_cpu_kernels_form(tiny_artifacts):
    art = _manifest(tiny_artifacts)["artifacts"]["int8-cpu"]
    assert art["file"] == "model_int8_cpu.onnx" and art["validation"]["worst_cosine"] >= 0.99
    assert art["calibration"]["activations"] == "uint8 asymmetric"
    model = onnx.load(str(tiny_artifacts / art["file"]))
    zero_points = {i.name: i.data_type for i in model.graph.initializer if "zero_point" in i.name}
    assert TensorProto.UINT8 in zero_points.values() and TensorProto.INT8 in zero_points.values()
    assert "Cast" not in {n.op_type for n in model.graph.node}  # plain fp32 graph underneath: no fp16 islands
    # TensorRT would reject it, and the lint says so
    assert any(v.rule == "zero-point" and "must be INT8" in v.message for v in lint_file(tiny_artifacts / art["file"]))


@pytest.mark.realsize
def test_vith14_real_size_fp16_int8(vith14_artifacts):
    data = _manifest(vith14_artifacts)
    fp16, int8 = data["artifacts"]["fp16"], data["artifacts"]["int8"]
    assert fp16["validation"]["passed"] and fp16["validation"]["worst_cosine"] >= 0.999
    assert int8["validation"]["passed"] and int8["validation"]["worst_cosine"] >= 0.99
    assert fp16["data_file"] is None and 1.2e9 < fp16["bytes"] < 1.4e9  # float16 weights, under 2 GB
    assert int8["bytes"] < 0.35 * data["artifacts"]["fp32"]["bytes"]
    assert lint_file(vith14_artifacts / "model_int8.onnx") == []
    assert fp16["validation"]["matmul_dtypes"] == {"float16": 32 * 8}
    cpu = data["artifacts"]["int8-cpu"]
    assert cpu["validation"]["passed"] and cpu["validation"]["worst_cosine"] >= 0.99
    assert cpu["bytes"] < 0.35 * data["artifacts"]["fp32"]["bytes"]
