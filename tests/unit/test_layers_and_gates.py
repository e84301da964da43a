"""The exporter's pure parts: the layer table, the gates, activation quantization against ONNX's own
QuantizeLinear/DequantizeLinear (run by ONNX Runtime), and the mixed-precision candidate sets."""

from __future__ import annotations

import numpy as np
import pytest

from ijepa_deploy.exporter.gates import QUANT_GATE, Gate
from ijepa_deploy.exporter.layers import (fc2_node_of, fc_partner, input_keys, input_of, input_spec, layer_names,
                                          layer_of_node, matmul_node, split, with_fc_pairs)
from ijepa_deploy.exporter.mixed_precision import SearchSpace, candidate_float_sets
from ijepa_deploy.exporter.onnx_graph import FP8, INT8, UINT8
from ijepa_deploy.exporter.precisions import get
from ijepa_deploy.exporter.quantization import act_quant, fake_quant
from ijepa_deploy.runtime.similarity import centered_cosine, neighbour_agreement


def test_layer_table():
    names = layer_names(2)
    assert len(names) == 12 and names[0] == "blocks.0.attn.query" and names[-1] == "blocks.1.mlp.fc2"
    assert input_of("blocks.1.attn.key") == "blocks.1.attn.qkv" and split("blocks.10.mlp.fc1") == (10, "mlp.fc1")
    assert input_keys(1) == ["blocks.0.attn.qkv", "blocks.0.mlp.fc1", "blocks.0.attn.proj", "blocks.0.mlp.fc2"]
    assert input_spec("blocks.0.attn.proj").producer == "attn.value" and not input_spec("blocks.3.mlp.fc2").foldable
    assert fc_partner("blocks.2.mlp.fc2") == "blocks.2.mlp.fc1" and fc_partner("blocks.2.attn.proj") is None
    assert with_fc_pairs({"blocks.0.mlp.fc2", "blocks.1.attn.key"}) == {"blocks.0.mlp.fc2", "blocks.0.mlp.fc1",
                                                                        "blocks.1.attn.key"}
    assert layer_of_node(matmul_node("blocks.4.attn.value")) == "blocks.4.attn.value"
    assert layer_of_node("blocks.4.attn.scores.MatMul") is None
    assert fc2_node_of("encoder.layer.3.mlp.fc1.MatMul") == "encoder.layer.3.mlp.fc2.MatMul"
    with pytest.raises(ValueError):
        split("blocks.0.norm1")


def test_gates_fail_on_what_users_lose():
    ref = np.random.default_rng(0).standard_normal((16, 32)) + 50.0  # a large shared component
    damaged = ref.mean(0, keepdims=True) + np.random.default_rng(1).standard_normal((16, 32))  # identity lost
    metrics = {"centered_cosine": float(centered_cosine(damaged, ref).min()),
               "top5_agreement": neighbour_agreement(damaged, ref, 5)}
    assert QUANT_GATE.failures(metrics)  # though the pooled cosine is ~1
    assert not QUANT_GATE.failures({"centered_cosine": 0.99, "top5_agreement": 0.95})
    assert Gate(min_cosine=0.9).failures({"pooled_cosine": float("nan")})  # NaN never passes
    assert get("fp16").gate.to_dict() == {"min_centered_cosine": 0.999, "k": 5}


@pytest.mark.parametrize("activation,dtype", [("int8", INT8), ("uint8", UINT8), ("fp8e4m3", FP8)])
def test_fake_quantization_is_onnx_qdq(activation, dtype):
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    from ijepa_deploy.exporter.onnx_graph import _NP

    x = np.random.default_rng(0).uniform(-3, 5, (64, 16)).astype(np.float32)
    q = act_quant(float(x.min()), float(x.max()), activation)
    assert q.dtype == dtype
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [q.scale])
    zero = onnx.numpy_helper.from_array(np.array(q.zero_point, _NP[dtype]), "z")
    graph = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                               helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "qdq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 16])], [scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx_y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ours = fake_quant(torch.from_numpy(x), q).numpy()
    assert np.allclose(ours, onnx_y, atol=1e-6)


def test_mixed_precision_candidates_keep_enough_quantized():
    names = layer_names(2)
    flops = {n: (4.0 if "fc" in n else 1.0) for n in names}
    space = SearchSpace(get("int8").recipe, {}, flops, total_flops=sum(flops.values()) * 1.25,
                        min_quantized_fraction=0.5)
    order = ["blocks.0.mlp.fc2", "blocks.1.attn.query", "blocks.1.mlp.fc1", *names]
    sets = list(candidate_float_sets(order, space))
    assert sets[0][0] == {"blocks.0.mlp.fc2", "blocks.0.mlp.fc1"}  # TensorRT's fc pair rule
    assert all(fraction >= 0.5 for _, fraction in sets)
    assert [len(s) for s, _ in sets] == sorted(len(s) for s, _ in sets)
