"""The precision report: what a plan really runs, parsed from engine-inspector JSON in the forms
TensorRT 10/11 writes (Myelin `gemm` / `kgen` layers with `[ONNX Layer: ...]` metadata, classic
layers named after their ONNX nodes, names-only output)."""

from __future__ import annotations

import json

import pytest

from ijepa_deploy.exporter.tensorrt_report import (layer_dtype, onnx_gemms, precision_report, report_problems)

BLOCKS = ["blocks.0", "blocks.1"]
PARTS = ("attn.query", "attn.key", "attn.value", "attn.proj", "mlp.fc1", "mlp.fc2")
GEMMS = {f"{b}.{p}.MatMul": True for b in BLOCKS for p in PARTS}


def _io(fmt):
    return [{"Name": "__mye1", "Location": "Device", "Dimensions": [1, 16, 64], "Format/Datatype": fmt}]


def _meta(*nodes):
    return "".join(f"[ONNX Layer: {n}]" for n in nodes)


def myelin_engine(types: dict[str, str], fused: dict[str, bool], attention_name="_gemm_mha_v2_myl0_{i}") -> dict:
    """Inspector JSON as Myelin writes it: qkv horizontally fused into one gemm (names mangled,
    `.` -> `_`), Q folded into the previous kernel, attention one kgen kernel when fused."""
    fmt = {"int8": "Int8", "fp8": "FP8", "fp16": "Half", "fp32": "Float"}
    tactic = {"int8": "sm90_xmma_gemm_i8f32_i8i32_f32_tn_n", "fp8": "sm90_xmma_gemm_e4m3e4m3_e4m3f32_f16",
              "fp16": "sm90_xmma_gemm_f16f16_f16f32_f16_tn_n", "fp32": "sm90_xmma_gemm_f32f32_f32f32_f32_tn_n"}
    layers = []
    for i, b in enumerate(BLOCKS):
        qkv = [f"{b}.attn.{p}.MatMul" for p in ("query", "key", "value")]
        layers.append({"Name": "+".join(n.replace(".", "_") for n in qkv) + f"_myl0_{i}", "LayerType": "gemm",
                       "Inputs": _io(fmt[types[qkv[0]]]), "Outputs": _io("Half"), "TacticName": tactic[types[qkv[0]]],
                       "StreamId": 0, "Metadata": _meta(*qkv)})
        scores, context = f"{b}.attn.scores.MatMul", f"{b}.attn.context.MatMul"
        if fused[b]:
            layers.append({"Name": attention_name.format(i=i), "LayerType": "kgen", "Inputs": _io("Half") * 3,
                           "Outputs": _io("Half"), "TacticName": attention_name.format(i=i) + "_0x95",
                           "Metadata": _meta(scores, f"{b}.attn.Softmax", context)})
        else:
            layers += [{"Name": f"{scores}_myl0", "LayerType": "gemm", "Inputs": _io("Half"), "Outputs": _io("Half"),
                        "TacticName": tactic["fp16"], "Metadata": _meta(scores)},
                       {"Name": f"__myl_Softmax_{i}", "LayerType": "kgen", "Inputs": _io("Half"), "Outputs": _io("Half"),
                        "TacticName": "__myl_Softmax_0x1", "Metadata": _meta(f"{b}.attn.Softmax")},
                       {"Name": f"{context}_myl0", "LayerType": "gemm", "Inputs": _io("Half"), "Outputs": _io("Half"),
                        "TacticName": tactic["fp16"], "Metadata": _meta(context)}]
        for p in ("attn.proj", "mlp.fc1", "mlp.fc2"):
            node = f"{b}.{p}.MatMul"
            layers.append({"Name": node.replace(".", "_") + f"_myl0_{i}", "LayerType": "gemm",
                           "Inputs": _io(fmt[types[node]]), "Outputs": _io("Half"), "TacticName": tactic[types[node]],
                           "Metadata": _meta(node, node.replace("MatMul", "BiasAdd"))})
        layers.append({"Name": f"__myl_AddCastMeanSubMul_myl0_{i}", "LayerType": "kgen", "Inputs": _io("Float"),
                       "Outputs": _io("Half"), "TacticName": "__myl_AddCastMean_0x2",
                       "Metadata": _meta(f"{b}.mlp.Residual", f"{b}.norm2")})
    return {"Layers": layers, "Bindings": ["pixel_values", "last_hidden_state", "embedding"]}


def test_all_quantized_and_fused():
    info = myelin_engine({n: "int8" for n in GEMMS}, {b: True for b in BLOCKS})
    report = precision_report(json.dumps(info), GEMMS, BLOCKS)
    assert report["available"] and report["gemm_dtypes"] == {"int8": 12}
    assert report["quantized_gemms_not_quantized"] == [] and report["attention"]["fused"] == 2
    assert report_problems(report) == ([], [])
    assert any("_gemm_mha_v2" in k for k in report["attention_kernels"])


def test_failed_fusion_is_refused_and_unfused_attention_warned():
    types = {n: "int8" for n in GEMMS} | {"blocks.1.mlp.fc1.MatMul": "fp16", "blocks.0.attn.proj.MatMul": "fp32"}
    report = precision_report(myelin_engine(types, {"blocks.0": True, "blocks.1": False}), GEMMS, BLOCKS)
    assert report["gemm_dtypes"] == {"int8": 10, "fp16": 1, "fp32": 1}
    assert report["quantized_gemms_not_quantized"] == ["blocks.0.attn.proj.MatMul", "blocks.1.mlp.fc1.MatMul"]
    assert report["attention"] == {"blocks": 2, "fused": 1, "unfused": ["blocks.1"], "not_found": 0}
    refusals, warnings = report_problems(report)
    assert "2 of 12 quantized GEMMs run in float" in refusals[0] and "blocks.0.attn.proj.MatMul" in refusals[0]
    assert "attention did not fuse in 1 of 2 blocks (blocks.1)" in warnings[0]


def test_fused_attention_is_found_by_metadata_whatever_the_kernel_name():
    """The old name regex (mha|fmha|flash|attention|...) reports nothing when Myelin names the fused
    kernel generically; the metadata shows q @ k^T and @ v in one layer."""
    info = myelin_engine({n: "fp8" for n in GEMMS}, {b: True for b in BLOCKS}, attention_name="__myl_Fused_{i}")
    report = precision_report(info, GEMMS, BLOCKS)
    assert report["attention"]["fused"] == 2 and report["attention_kernels"] == []
    assert report["gemm_dtypes"] == {"fp8": 12}


def test_float_artifact_and_names_only_output():
    fp16 = {n: False for n in GEMMS}
    report = precision_report(myelin_engine({n: "fp16" for n in GEMMS}, {b: True for b in BLOCKS}), fp16, BLOCKS)
    assert report["gemm_dtypes"] == {"fp16": 12} and report_problems(report) == ([], [])
    names_only = {"Layers": ["{ForeignNode[blocks.0.norm1...embedding.Identity]}"], "Bindings": []}
    report = precision_report(names_only, GEMMS, BLOCKS)
    assert not report["available"] and "DETAILED" in report["reason"]
    assert "cannot verify" in report_problems({**report, "quantized_gemms": 12})[0][0]
    assert report_problems({**report, "quantized_gemms": 0}) == ([], [])


@pytest.mark.parametrize("layer,dtype", [
    ({"Inputs": [{"Format/Datatype": "Row major linear FP32"}], "TacticName": "sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n"},
     "tf32"),
    ({"Inputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]}, "fp16"),
    ({"Inputs": [{"Format/Datatype": "Four wide channel vectorized row major Int8 format"}]}, "int8"),
    ({"Inputs": [{"Format/Datatype": "Row major linear BFloat16 format"}], "TacticName": "gemm_bf16bf16_bf16f32"},
     "bf16"),
    ({"Inputs": [{"Format/Datatype": "Half"}], "TacticName": "sm90_xmma_gemm_e4m3e4m3_e4m3f32"}, "fp8"),
    ({"Name": "x"}, None),
])
def test_layer_dtype(layer, dtype):
    assert layer_dtype(layer) == dtype


def test_onnx_gemms_of_the_artifacts(tiny_artifacts):
    gemms, blocks = onnx_gemms(tiny_artifacts / "model_int8.onnx")
    assert blocks == BLOCKS and gemms == GEMMS  # every weight MatMul quantized; attention MatMuls are not weights
    gemms, _ = onnx_gemms(tiny_artifacts / "model_fp16.onnx")
    assert set(gemms) == set(GEMMS) and not any(gemms.values())
