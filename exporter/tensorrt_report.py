"""What a plan really runs, read from TensorRT's engine inspector (JSON, profiling verbosity
DETAILED): the data type of every weight GEMM and whether each block's attention fused.

A failed Q/DQ fusion is silent: TensorRT then runs DQ + a float GEMM, correct but slow. So the
report maps every weight MatMul of the ONNX file (stable names: `blocks.3.mlp.fc1.MatMul`) to the
engine layer that computes it, by the `[ONNX Layer: ...]` entries TensorRT writes into each layer's
metadata (Myelin-compiled layers keep them; their layer names are mangled, `.` -> `_`), and reads the
layer's type from its input formats (`Int8`, `FP8`, `Half`, `Float`, or the long format names) or its
GEMM tactic name (`..._gemm_i8f32_...`, `..._gemm_e4m3...`, `..._gemm_f16f16_...`). Pure functions:
unit-tested on inspector JSON without TensorRT.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
TACTIC_TYPE = re.compile(r"gemm_(bf16|e4m3|e5m2|fp8|i8|f16|tf32|f32)", re.IGNORECASE)
TACTIC_NAMES = {"bf16": "bf16", "e4m3": "fp8", "e5m2": "fp8", "fp8": "fp8", "i8": "int8", "f16": "fp16",
                "tf32": "tf32", "f32": "fp32"}
FORMAT_TYPES = (("int8", "int8"), ("fp8", "fp8"), ("e4m3", "fp8"), ("bfloat16", "bf16"), ("bf16", "bf16"),
                ("half", "fp16"), ("fp16", "fp16"), ("float", "fp32"), ("fp32", "fp32"))
FUSED_ATTENTION = re.compile(r"mha|fmha|flash|attention|_sdpa", re.IGNORECASE)
QUANTIZED = ("int8", "fp8")


def layers_of(info: dict | str) -> list[dict]:
    """The inspector's layers as dicts (names only when the plan was not built with DETAILED)."""
    if isinstance(info, str):
        info = json.loads(info)
    return [layer if isinstance(layer, dict) else {"Name": str(layer)} for layer in info.get("Layers", [])]


def _norm(name: str) -> str:
    return re.sub(r"[./]", "_", name)


def onnx_names(layer: dict) -> list[str]:
    """The ONNX nodes a layer computes, from its metadata."""
    return ONNX_LAYER.findall(str(layer.get("Metadata", "")))


def _covers(layer: dict, node: str) -> bool:
    return node in onnx_names(layer) or _norm(node) in _norm(str(layer.get("Name", "")))


def _format_type(fmt: str) -> str | None:
    low = fmt.lower()
    return next((t for key, t in FORMAT_TYPES if key in low), None)


def layer_dtype(layer: dict) -> str | None:
    """int8 / fp8 when a quantized input reaches the layer, else the GEMM tactic's type, else the
    type of its first input."""
    inputs = [_format_type(str(i.get("Format/Datatype", ""))) for i in layer.get("Inputs", []) if isinstance(i, dict)]
    quantized = [t for t in inputs if t in QUANTIZED]
    if quantized:
        return quantized[0]
    m = TACTIC_TYPE.search(str(layer.get("TacticName", "")))
    if m:
        kind = TACTIC_NAMES[m[1].lower()]
        return "tf32" if kind == "fp32" and "tf32" in str(layer["TacticName"]).lower() else kind
    return next((t for t in inputs if t), None)


def _is_gemm(layer: dict) -> bool:
    text = f"{layer.get('LayerType', '')} {layer.get('TacticName', '')}".lower()
    return any(k in text for k in ("gemm", "matrixmultiply", "matmul", "convolution")) and \
        not FUSED_ATTENTION.search(str(layer.get("TacticName", "")) + str(layer.get("Name", "")))


def gemm_layer(layers: list[dict], node: str) -> dict | None:
    """The layer computing ONNX node `node` (a GEMM layer first, else any layer covering it)."""
    covering = [layer for layer in layers if _covers(layer, node)]
    return next((layer for layer in covering if _is_gemm(layer)), covering[0] if covering else None)


def attention_fused(layers: list[dict], block: str) -> bool | None:
    """Whether q @ k^T, softmax and @ v of `block` run in one layer (None: not found)."""
    scores, context = f"{block}.attn.scores.MatMul", f"{block}.attn.context.MatMul"
    holders = [layer for layer in layers if _covers(layer, scores)]
    if not holders:
        return None
    return any(_covers(layer, context) or FUSED_ATTENTION.search(f"{layer.get('Name', '')} {layer.get('TacticName', '')}")
               for layer in holders)


def precision_report(info: dict | str, gemms: dict[str, bool], blocks: list[str]) -> dict:
    """`gemms`: weight MatMul node name -> whether the ONNX file quantizes it; `blocks`: block names
    (`blocks.0`, ...). Returns what the plan runs, for the manifest."""
    layers = layers_of(info)
    detailed = any("Inputs" in layer or "Metadata" in layer for layer in layers)
    if not detailed:
        return {"available": False, "reason": "the inspector gave layer names only (build with profiling "
                                              "verbosity DETAILED)", "layers": len(layers),
                "quantized_gemms": sum(gemms.values())}
    types: dict[str, str] = {}
    for node in gemms:
        layer = gemm_layer(layers, node)
        types[node] = "not found" if layer is None else (layer_dtype(layer) or "unknown")
    float_quantized = sorted(n for n, q in gemms.items() if q and types[n] not in QUANTIZED)
    fused = {b: attention_fused(layers, b) for b in blocks}
    kernels = sorted({str(layer.get(k, "")) for layer in layers for k in ("Name", "TacticName")
                      if FUSED_ATTENTION.search(str(layer.get(k, "")))})
    return {"available": True, "layers": len(layers), "gemm_dtypes": dict(Counter(types.values())),
            "quantized_gemms": sum(gemms.values()), "quantized_gemms_not_quantized": float_quantized[:32],
            "quantized_gemms_not_quantized_count": len(float_quantized),
            "attention": {"blocks": len(blocks), "fused": sum(1 for v in fused.values() if v),
                          "unfused": sorted(b for b, v in fused.items() if v is False)[:32],
                          "not_found": sum(1 for v in fused.values() if v is None)},
            "attention_kernels": kernels[:20]}


def report_problems(report: dict) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for a plan's report: quantized GEMMs that run in float are refused
    (unless the caller allows them); unfused attention is warned about."""
    if not report.get("available"):
        expected = report.get("quantized_gemms", 0)
        return ([f"cannot verify that the quantized GEMMs run quantized: {report.get('reason')}"] if expected else [],
                [])
    refusals, warnings = [], []
    bad = report["quantized_gemms_not_quantized_count"]
    if bad:
        names = ", ".join(report["quantized_gemms_not_quantized"][:4])
        refusals.append(f"{bad} of {report['quantized_gemms']} quantized GEMMs run in float, not int8/fp8 (a Q/DQ "
                        f"fusion failed: correct but slow): {names}{', ...' if bad > 4 else ''}")
    att = report["attention"]
    if att["unfused"]:
        warnings.append(f"attention did not fuse in {len(att['unfused'])} of {att['blocks']} blocks "
                        f"({', '.join(att['unfused'][:3])}{', ...' if len(att['unfused']) > 3 else ''})")
    return refusals, warnings


def onnx_gemms(path: Path) -> tuple[dict[str, bool], list[str]]:
    """Weight MatMuls of an ONNX file (name -> quantized by Q/DQ) and its block names."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    constants = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def weight(name: str) -> tuple[bool, bool]:  # (is a weight, through a DequantizeLinear)
        p = producers.get(name)
        if name in constants:
            return True, False
        return (True, True) if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in constants \
            else (False, False)

    gemms = {}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and weight(node.input[1])[0]:
            x = producers.get(node.input[0])
            gemms[node.name] = weight(node.input[1])[1] and x is not None and x.op_type == "DequantizeLinear"
    blocks = sorted({n.name.split(".attn.")[0] for n in model.graph.node if n.name.endswith(".attn.scores.MatMul")},
                    key=lambda b: int(b.split(".")[-1]) if b.split(".")[-1].isdigit() else 0)
    return gemms, blocks
