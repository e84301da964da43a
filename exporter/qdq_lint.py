"""A lint for INT8 Q/DQ ONNX files against TensorRT's explicit-quantization rules.

Works on any ONNX file (structure only, no names required) and reports every violation:
  opset       default-domain opset >= 13 (per-axis Q/DQ), >= 19 for float8 Q/DQ or float16 scales
  zero-point  every zero point present, int8 or float8 E4M3, all 0 (symmetric; UINT8 is rejected)
  scale       every scale a constant, finite, > 0, float32 or float16
  axis        weights per channel on the output axis (MatMul [in, out]: axis 1; Conv: axis 0);
              activations per tensor
  placement   Q/DQ only feed weight-bearing MatMul/Gemm/Conv; not LayerNorm, Softmax, Add, the
              3-channel patch-embedding Conv, attention MatMuls (two activations), or the head
  output      no Q/DQ on MatMul/Gemm outputs (or their bias Add): it blocks bias/GELU fusion
  fc-pair     an MLP's fc1 is quantized only together with its fc2 (TensorRT NaN bug with int8
              fc1 -> GELU -> fp16 consumer)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

from .errors import ExportError
from .layers import fc2_node_of

QDQ = ("QuantizeLinear", "DequantizeLinear")
ZERO_POINT_TYPES = (TensorProto.INT8, TensorProto.FLOAT8E4M3FN)
SCALE_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)
WEIGHT_OPS = ("MatMul", "Gemm", "Conv")


@dataclass(frozen=True)
class Violation:
    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"


class _Graph:
    def __init__(self, model: onnx.ModelProto, base_dir: Path):
        g = model.graph
        self.base_dir = base_dir
        self.nodes = list(g.node)
        self.initializers = {t.name: t for t in g.initializer}
        self.constants = {n.output[0]: n.attribute[0].t for n in g.node if n.op_type == "Constant" and n.attribute}
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}

    def constant(self, name: str) -> np.ndarray | None:
        t = self.initializers.get(name) or self.constants.get(name)
        if t is None:
            return None
        if uses_external_data(t):
            t = onnx.TensorProto.FromString(t.SerializeToString())
            load_external_data_for_tensor(t, str(self.base_dir))
        return numpy_helper.to_array(t)

    def dtype(self, name: str) -> int | None:
        t = self.initializers.get(name) or self.constants.get(name)
        return None if t is None else t.data_type

    def is_constant(self, name: str) -> bool:
        return name in self.initializers or name in self.constants

    def weight_source(self, name: str) -> str | None:
        """The constant behind a tensor: itself, or the input of the DequantizeLinear producing it."""
        if self.is_constant(name):
            return name
        p = self.producer.get(name)
        if p is not None and p.op_type == "DequantizeLinear" and self.is_constant(p.input[0]):
            return p.input[0]
        return None

    def is_weight(self, name: str) -> bool:
        return self.weight_source(name) is not None

    def dims(self, name: str) -> tuple[int, ...]:
        """A constant's shape, read from its proto (no external data is loaded)."""
        t = self.initializers.get(name) or self.constants.get(name)
        return tuple(t.dims)

    def reaches_output(self, name: str, hops: int = 3) -> bool:
        if name in self.outputs:
            return True
        if hops == 0:
            return False
        return any(self.reaches_output(o, hops - 1) for c in self.consumers.get(name, [])
                   if c.op_type in ("Add", "Identity") for o in c.output)


def lint_model(model: onnx.ModelProto, base_dir: Path = Path(".")) -> list[Violation]:
    g = _Graph(model, base_dir)
    out: list[Violation] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        out.append(Violation("opset", "model", f"opset {opset} < 13: per-axis Q/DQ needs opset >= 13"))
    float8 = any(t.data_type == TensorProto.FLOAT8E4M3FN for t in g.initializers.values())
    if float8 and opset < 19:
        out.append(Violation("opset", "model", f"opset {opset} < 19: float8 Q/DQ needs opset >= 19"))
    half = any(g.dtype(n.input[1]) == TensorProto.FLOAT16 for n in g.nodes if n.op_type in QDQ and len(n.input) > 1)
    if half and opset < 19:
        out.append(Violation("opset", "model", f"opset {opset} < 19: float16 Q/DQ scales need opset >= 19"))

    for n in g.nodes:
        if n.op_type not in QDQ:
            continue
        out += _check_scale_and_zero_point(g, n)
        if n.op_type == "DequantizeLinear":
            out += _check_dq_consumers(g, n)
        else:
            out += _check_q_input(g, n)
    out += _check_fc_pairs(g)
    return out


def _check_scale_and_zero_point(g: _Graph, n: onnx.NodeProto) -> list[Violation]:
    out = []
    scale = g.constant(n.input[1]) if len(n.input) > 1 else None
    if scale is None:
        out.append(Violation("scale", n.name, f"scale {n.input[1] if len(n.input) > 1 else '?'} is not a constant"))
    elif g.dtype(n.input[1]) not in SCALE_TYPES:
        name = TensorProto.DataType.Name(g.dtype(n.input[1]))
        out.append(Violation("scale", n.name, f"scale is {name}; TensorRT takes FLOAT or FLOAT16 scales"))
    elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        out.append(Violation("scale", n.name, f"scale has non-positive or non-finite values (min {np.min(scale):g})"))
    zp_name = n.input[2] if len(n.input) > 2 and n.input[2] else None
    if zp_name is None:
        out.append(Violation("zero-point", n.name, "no zero point: defaults to UINT8, which TensorRT rejects"))
    else:
        zp_tensor = g.initializers.get(zp_name) or g.constants.get(zp_name)
        zp = g.constant(zp_name)
        if zp is None:
            out.append(Violation("zero-point", n.name, f"zero point {zp_name} is not a constant"))
        elif zp_tensor.data_type not in ZERO_POINT_TYPES:
            out.append(Violation("zero-point", n.name, f"zero point is {TensorProto.DataType.Name(zp_tensor.data_type)}, "
                                                       "must be INT8 (or FLOAT8E4M3FN for fp8)"))
        elif np.any(zp.astype(np.float32) != 0):
            out.append(Violation("zero-point", n.name, "zero point is not 0 (TensorRT takes symmetric only)"))
    return out


def _axis(n: onnx.NodeProto) -> int:
    return next((a.i for a in n.attribute if a.name == "axis"), 1)


def _check_dq_consumers(g: _Graph, dq: onnx.NodeProto) -> list[Violation]:
    out = []
    is_weight = g.is_constant(dq.input[0])
    scale = g.constant(dq.input[1])
    per_channel = scale is not None and scale.size > 1
    for c in g.consumers.get(dq.output[0], []):
        if c.op_type in QDQ:
            continue
        if c.op_type not in WEIGHT_OPS:
            out.append(Violation("placement", c.name, f"{c.op_type} takes a dequantized input; only weight-bearing "
                                                        "MatMul/Gemm/Conv may be quantized"))
            continue
        if c.op_type == "Conv":
            src = g.weight_source(c.input[1])
            shape = g.dims(src) if src else ()
            if len(shape) == 4 and shape[1] <= 4:
                out.append(Violation("placement", c.name, f"Conv with {shape[1]} input channels (patch embedding) "
                                                          "must stay unquantized"))
        if c.op_type == "MatMul" and not (g.is_weight(c.input[0]) or g.is_weight(c.input[1])):
            out.append(Violation("placement", c.name, "attention MatMul (two activations) must not be quantized "
                                                      "(TensorRT int8 MHA needs head size 16/32/64)"))
        if any(g.reaches_output(o) for o in c.output):
            out.append(Violation("placement", c.name, f"{c.op_type} feeds a graph output (the head): keep it unquantized"))
        if is_weight:
            want = 0 if c.op_type == "Conv" else 1
            if c.op_type == "Gemm" and any(a.name == "transB" and a.i for a in c.attribute):
                want = 0
            if not per_channel:
                out.append(Violation("axis", dq.name, f"weight of {c.name} is quantized per tensor; use per channel"))
            elif _axis(dq) % len(g.dims(dq.input[0])) != want:
                out.append(Violation("axis", dq.name, f"weight of {c.op_type} {c.name} quantized on axis {_axis(dq)}; "
                                                      f"the output-channel axis is {want}"))
        elif per_channel:
            out.append(Violation("axis", dq.name, f"activation into {c.name} is per channel; use per tensor"))
    return out


def _check_q_input(g: _Graph, q: onnx.NodeProto) -> list[Violation]:
    p = g.producer.get(q.input[0])
    if p is None:
        return []
    if p.op_type in ("MatMul", "Gemm"):
        return [Violation("output", q.name, f"quantizes the output of {p.op_type} {p.name}; blocks bias/GELU fusion")]
    if p.op_type == "Add" and any(getattr(g.producer.get(i), "op_type", None) in ("MatMul", "Gemm") for i in p.input):
        return [Violation("output", q.name, f"quantizes the bias-add output {p.name} of a MatMul; blocks fusion")]
    return []


def _check_fc_pairs(g: _Graph) -> list[Violation]:
    quantized = {c.name for n in g.nodes if n.op_type == "DequantizeLinear"
                 for c in g.consumers.get(n.output[0], []) if c.op_type == "MatMul"}
    out = []
    for name in quantized:
        partner = fc2_node_of(name)
        if partner and partner not in quantized:
            out.append(Violation("fc-pair", name, "fc1 quantized without its fc2 (TensorRT int8 fc1->GELU->fp16 NaN bug)"))
    return out


def lint_file(path: Path) -> list[Violation]:
    """Lint an ONNX file (external data is read only for the scales and zero points)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{path} is not an ONNX file ({str(exc).splitlines()[0][:200]})") from None
    if not model.opset_import or not model.graph.node:
        raise ExportError(f"{path} is not an ONNX model (no opset, no graph nodes)")
    return lint_model(model, path.parent)
