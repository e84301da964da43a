"""Build the plain-ONNX graph of an I-JEPA encoder from the reference model's weights.

The graph is written with onnx's own API rather than traced, so its form is exactly what
TensorRT and ONNX Runtime want: one LayerNormalization node per norm (opset >= 17), the attention
scale folded into the q weights (TensorRT's MHA fusion needs it before q @ k^T), exact-erf GELU,
a cubic Resize of the position table over the last two axes (dynamic resolution) or a baked
table (fixed resolution), and stable node names (`blocks.3.mlp.fc1.MatMul`) that the precision
passes and the Q/DQ lint address.

A `GraphPrecision` says in which dtype each region computes; the residual stream, LayerNorm,
position table, pooling and head always stay float32, and every dtype boundary is an explicit
Cast, so the typed graph is what a strongly typed TensorRT network compiles. A `QuantPlan` adds
explicit Q/DQ on the inputs of the weight MatMuls it names (weights stored quantized, per output
channel; activations per tensor, one Q/DQ pair per tensor however many MatMuls read it). Q/DQ
scales take the dtype of the region they sit in (float16 scales need opset >= 19).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from ijepa_deploy.reference_model import IJepaEncoder, interpolate_position_table

from .layers import matmul_node

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
INT8, UINT8, FP8 = TensorProto.INT8, TensorProto.UINT8, TensorProto.FLOAT8E4M3FN
_NP = {F32: np.float32, F16: np.float16, INT8: np.int8, UINT8: np.uint8, FP8: ml_dtypes.float8_e4m3fn}
FP8_MAX = 448.0
EXTERNAL_DATA_ABOVE = 256 << 20  # weights beyond this go to one aligned external file
INPUT_NAME = "pixel_values"


@dataclass(frozen=True)
class GraphPrecision:
    """Where each region of the encoder computes."""

    name: str
    linear: int  # q/k/v/proj/fc1/fc2 MatMuls and the GELU between fc1 and fc2
    attention: int  # q @ k^T, softmax, @ v


FP32_GRAPH = GraphPrecision("fp32", linear=F32, attention=F32)
FP16_GRAPH = GraphPrecision("fp16", linear=F16, attention=F16)
# The graph that Q/DQ is placed on for TensorRT: the fp16 graph (float32 LayerNorm/residual islands),
# Q/DQ with float16 scales. A strongly typed network builds every float32 layer as strict FP32, so
# DQ outputs, biases, GELU and the MatMuls mixed precision keeps in float must be float16 here
# (Model Optimizer's default for the float region of quantized graphs). Attention stays float16.
QDQ_FP16_GRAPH = GraphPrecision("qdq-fp16", linear=F16, attention=F16)
HALF_SCALE_MIN = 2.0 ** -14  # smallest normal float16: no subnormal scales


@dataclass(frozen=True)
class ActQuant:
    """Per-tensor quantization of one MatMul input: y = saturate(round(x / scale) + zero_point)."""

    scale: float
    zero_point: float
    dtype: int  # INT8, UINT8 or FP8


@dataclass
class QuantPlan:
    """Which weight MatMuls (by layer name, e.g. "blocks.3.mlp.fc1") get Q/DQ, and how."""

    weight_dtype: int  # INT8 or FP8, symmetric, per output channel
    activations: dict[str, ActQuant] = field(default_factory=dict)
    # Per-channel shifts subtracted from a layer's input before its Q/DQ (z W is added to its bias):
    # for inputs that no linear producer can absorb them into (fc2 reads GELU's output).
    input_shifts: dict[str, np.ndarray] = field(default_factory=dict)


def stored_scale(scale, dtype: int, round_up: bool = False) -> np.ndarray:
    """A scale as stored in a graph region of `dtype`: float16 is clamped to its normal range and,
    with `round_up`, never below the float32 value (so quantized values stay within range)."""
    scale = np.asarray(scale, np.float32)
    if dtype != F16:
        return scale
    clamped = np.clip(scale, HALF_SCALE_MIN, 65504.0)
    half = np.asarray(clamped.astype(np.float16))
    if round_up:
        low = half.astype(np.float32) < clamped
        half[low] = np.nextafter(half[low], np.float16(np.inf))
    return half


def quantize_weight(w: np.ndarray, dtype: int, scale_dtype: int = F32) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel quantization of a [in, out] weight: (values, scale[out]), the
    values computed with the scale exactly as stored (in `scale_dtype`)."""
    amax = np.maximum(np.abs(w).max(axis=0), 1e-12).astype(np.float32)
    scale = stored_scale(amax / (FP8_MAX if dtype == FP8 else 127.0), scale_dtype, round_up=True)
    s = scale.astype(np.float32)
    if dtype == FP8:
        return np.clip(w / s, -FP8_MAX, FP8_MAX).astype(ml_dtypes.float8_e4m3fn), scale
    return np.clip(np.rint(w / s), -127, 127).astype(np.int8), scale


@dataclass
class GraphSpec:
    """What to build: which precision, which resolution, which opset."""

    precision: GraphPrecision
    resolution: tuple[int, int] | None = None  # None: dynamic height/width
    opset: int = 17
    quant: QuantPlan | None = None


class _Builder:
    """Accumulates nodes and initializers; weights are streamed to an external file when asked."""

    def __init__(self, opset: int, data_path: Path | None, quant: QuantPlan | None = None):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._data_path = data_path
        self._data = open(data_path, "wb") if data_path else None
        self.quant = quant
        self._dequantized: dict[tuple[str, ActQuant], str] = {}

    def close(self) -> None:
        if self._data:
            self._data.close()

    def weight(self, name: str, array: np.ndarray) -> str:
        array = np.ascontiguousarray(array)
        if self._data is None or array.nbytes < 1024:
            self.initializers.append(onnx.numpy_helper.from_array(array, name))
            return name
        offset = self._data.tell()
        pad = (-offset) % 64  # aligned so runtimes can map tensors directly
        self._data.write(b"\0" * pad)
        offset += pad
        self._data.write(array.tobytes())
        tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self._data_path.name), ("offset", str(offset)), ("length", str(array.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)
        return name

    def const(self, name: str, values, dtype=np.int64) -> str:
        return self.weight(name, np.asarray(values, dtype=dtype))

    def node(self, op: str, inputs: list[str], name: str, outputs: list[str] | None = None, **attrs) -> str:
        outputs = outputs or [f"{name}.out"]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0]

    def cast(self, x: str, src: int, dst: int, name: str) -> str:
        return x if src == dst else self.node("Cast", [x], name, to=dst)

    def dequantized(self, x: str, q: ActQuant, dtype: int = F32) -> str:
        """x (of `dtype`) through QuantizeLinear -> DequantizeLinear with `q` (one pair per tensor and
        parameters; the scale in `dtype`)."""
        key = (x, q)
        if key not in self._dequantized:
            tag = x + ("" if not any(k[0] == x for k in self._dequantized) else f".{len(self._dequantized)}")
            scale = self.weight(f"{tag}.scale", stored_scale(q.scale, dtype))
            zero = self.weight(f"{tag}.zero_point", np.array(q.zero_point, _NP[q.dtype]))
            quantized = self.node("QuantizeLinear", [x, scale, zero], f"{tag}.QuantizeLinear")
            self._dequantized[key] = self.node("DequantizeLinear", [quantized, scale, zero], f"{tag}.DequantizeLinear")
        return self._dequantized[key]

    def linear(self, x: str, layer: torch.nn.Linear, name: str, dtype: int, scale: float = 1.0) -> str:
        """x @ W^T + b with W stored as [in, out] (per-channel quantization axis 1); with Q/DQ when
        the quantization plan names this layer."""
        w = _np(layer.weight).T * scale
        act = self.quant.activations.get(name) if self.quant else None
        shift = self.quant.input_shifts.get(name) if act is not None else None
        bias_shift = 0.0
        if shift is not None:  # x W + b = (x - z) W + (b + z W)
            x = self.node("Sub", [x, self.weight(f"{name}.input_shift", shift.astype(_NP[dtype]))], f"{name}.InputShift")
            bias_shift = shift.astype(np.float64) @ w.astype(np.float64)
        if act is None:
            weight = self.weight(f"{name}.weight", w.astype(_NP[dtype]))
        else:
            values, w_scale = quantize_weight(w, self.quant.weight_dtype, dtype)
            stored = self.weight(f"{name}.weight_quantized", values)
            w_scale = self.weight(f"{name}.weight_scale", w_scale)
            zero = self.weight(f"{name}.weight_zero_point", np.zeros(values.shape[1], _NP[self.quant.weight_dtype]))
            weight = self.node("DequantizeLinear", [stored, w_scale, zero], f"{name}.weight.DequantizeLinear", axis=1)
            x = self.dequantized(x, act, dtype)
        y = self.node("MatMul", [x, weight], matmul_node(name))
        if layer.bias is None:
            return y
        b = _np(layer.bias) * scale + bias_shift
        return self.node("Add", [y, self.weight(f"{name}.bias", b.astype(_NP[dtype]))], f"{name}.BiasAdd")

    def layer_norm(self, x: str, norm: torch.nn.LayerNorm, name: str) -> str:
        w = self.weight(f"{name}.weight", _np(norm.weight))
        b = self.weight(f"{name}.bias", _np(norm.bias))
        return self.node("LayerNormalization", [x, w, b], name, axis=-1, epsilon=float(norm.eps))

    def reduce_mean(self, x: str, axis: int, name: str) -> str:
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.const(f"{name}.axes", [axis])], name, keepdims=0)
        return self.node("ReduceMean", [x], name, axes=[axis], keepdims=0)


def build_graph(model: IJepaEncoder, spec: GraphSpec, onnx_path: Path, *, external_data: bool | None = None) -> Path:
    """Write the encoder as ONNX to `onnx_path` (weights in `<file>.data` when external) and return it."""
    arch = model.arch
    prec = spec.precision
    bytes_per_weight = 1 if spec.quant else 2 if prec.linear == F16 else 4
    nbytes = sum(p.numel() * bytes_per_weight for p in model.parameters())
    if external_data is None:
        external_data = nbytes > EXTERNAL_DATA_ABOVE
    data_path = onnx_path.with_name(onnx_path.name + ".data") if external_data else None
    g = _Builder(spec.opset, data_path, spec.quant)
    try:
        with torch.no_grad():
            outputs = _encoder(g, model, spec)
        graph = helper.make_graph(g.nodes, f"ijepa_{prec.name}", [_input_info(arch, spec)], outputs, g.initializers)
    finally:
        g.close()
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", spec.opset)],
                          producer_name="ijepa-deploy", doc_string=f"I-JEPA encoder ({arch.describe()}), {prec.name}")
    m.ir_version = min(m.ir_version, 10)  # readable by TensorRT 10.x's parser and older runtimes
    onnx.save_model(m, str(onnx_path))
    return onnx_path


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy()


def _input_info(arch, spec: GraphSpec) -> onnx.ValueInfoProto:
    h, w = spec.resolution or ("height", "width")
    return helper.make_tensor_value_info(INPUT_NAME, F32, ["batch", arch.num_channels, h, w])


def _encoder(g: _Builder, model: IJepaEncoder, spec: GraphSpec) -> list[onnx.ValueInfoProto]:
    arch, prec = model.arch, spec.precision
    d, p = arch.hidden_size, arch.patch_size

    # Patch embedding: (B,C,H,W) -> (B,D,h,w) -> (B,N,D).
    conv = model.patch_embed.proj
    x = g.node("Conv", [INPUT_NAME, g.weight("patch_embed.proj.weight", _np(conv.weight)),
                        g.weight("patch_embed.proj.bias", _np(conv.bias))],
               "patch_embed.proj.Conv", kernel_shape=[p, p], strides=[p, p])
    x = g.node("Reshape", [x, g.const("patch_embed.flat_shape", [0, d, -1])], "patch_embed.Flatten")
    x = g.node("Transpose", [x], "patch_embed.Transpose", perm=[0, 2, 1])
    x = g.node("Add", [x, _position_table(g, model, spec)], "pos_embed.Add")

    for i, block in enumerate(model.blocks):
        x = _block(g, block, f"blocks.{i}", x, arch, prec)

    hidden = g.layer_norm(x, model.norm, "norm")
    hidden = g.node("Identity", [hidden], "last_hidden_state.Identity", outputs=["last_hidden_state"])
    embedding = g.reduce_mean(hidden, 1, "pool.ReduceMean")
    embedding = g.node("Identity", [embedding], "embedding.Identity", outputs=["embedding"])
    tokens = "tokens" if spec.resolution is None else (spec.resolution[0] // p) * (spec.resolution[1] // p)
    outputs = [helper.make_tensor_value_info("last_hidden_state", F32, ["batch", tokens, d]),
               helper.make_tensor_value_info("embedding", F32, ["batch", d])]
    if model.head is not None:
        logits = g.linear(embedding, model.head, "head", F32)
        g.node("Identity", [logits], "logits.Identity", outputs=["logits"])
        outputs.append(helper.make_tensor_value_info("logits", F32, ["batch", arch.num_labels]))
    return outputs


def _position_table(g: _Builder, model: IJepaEncoder, spec: GraphSpec) -> str:
    arch = model.arch
    d, p, grid = arch.hidden_size, arch.patch_size, arch.grid_size
    if spec.resolution is not None:  # fixed: the interpolated table is a constant
        h, w = spec.resolution[0] // p, spec.resolution[1] // p
        return g.weight("pos_embed", _np(interpolate_position_table(model.pos_embed, h, w)))
    # Dynamic: (1,N0,D) -> (1,D,g,g) -> cubic Resize to (H//P, W//P) -> (1,N,D). With
    # cubic_coeff_a=-0.75 and half_pixel this is torch's bicubic with align_corners=False, size=.
    square = _np(model.pos_embed.reshape(1, grid, grid, d).permute(0, 3, 1, 2))
    table = g.weight("pos_embed.square", square)
    hw = g.node("Shape", [INPUT_NAME], "pos_embed.InputShape", start=2, end=4)
    grid_hw = g.node("Div", [hw, g.const("pos_embed.patch", [p])], "pos_embed.GridSize")
    sizes = g.node("Concat", [g.const("pos_embed.lead", [1, d]), grid_hw], "pos_embed.Sizes", axis=0)
    resized = g.node("Resize", [table, "", "", sizes], "pos_embed.Resize", mode="cubic", cubic_coeff_a=-0.75,
                     coordinate_transformation_mode="half_pixel", exclude_outside=0)
    flat = g.node("Reshape", [resized, g.const("pos_embed.flat_shape", [1, d, -1])], "pos_embed.Flatten")
    return g.node("Transpose", [flat], "pos_embed.Transpose", perm=[0, 2, 1])


def _block(g: _Builder, block, name: str, x: str, arch, prec: GraphPrecision) -> str:
    heads, head_dim, d = arch.num_heads, arch.head_dim, arch.hidden_size
    lin, att = prec.linear, prec.attention

    # Attention: x + proj(softmax((q*scale) @ k^T) @ v), the scale folded into the q weights.
    h = g.cast(g.layer_norm(x, block.norm1, f"{name}.norm1"), F32, lin, f"{name}.norm1.Cast")
    split = g.const(f"{name}.attn.split_heads", [0, 0, heads, head_dim])
    q, k, v = (g.linear(h, getattr(block.attn, part), f"{name}.attn.{part}", lin,
                        scale=block.attn.scale if part == "query" else 1.0) for part in ("query", "key", "value"))
    q, k, v = (g.cast(t, lin, att, f"{name}.attn.{part}.Cast") for t, part in ((q, "query"), (k, "key"), (v, "value")))
    q = g.node("Transpose", [g.node("Reshape", [q, split], f"{name}.attn.q.Reshape")], f"{name}.attn.q.Transpose",
               perm=[0, 2, 1, 3])
    # k^T as heads-first then a last-two-axes swap: OpenVINO folds the swap into MatMul(transpose_b) and
    # its attention fusion absorbs the rest (one [0, 2, 3, 1] transpose stayed outside, ~3 % of ViT-H
    # int8); ONNX Runtime and TensorRT merge consecutive transposes anyway.
    k = g.node("Transpose", [g.node("Reshape", [k, split], f"{name}.attn.k.Reshape")], f"{name}.attn.k.Heads",
               perm=[0, 2, 1, 3])
    k = g.node("Transpose", [k], f"{name}.attn.k.Transpose", perm=[0, 1, 3, 2])
    v = g.node("Transpose", [g.node("Reshape", [v, split], f"{name}.attn.v.Reshape")], f"{name}.attn.v.Transpose",
               perm=[0, 2, 1, 3])
    scores = g.node("MatMul", [q, k], f"{name}.attn.scores.MatMul")
    weights = g.node("Softmax", [scores], f"{name}.attn.Softmax", axis=-1)
    ctx = g.node("MatMul", [weights, v], f"{name}.attn.context.MatMul")
    ctx = g.node("Transpose", [ctx], f"{name}.attn.context.Transpose", perm=[0, 2, 1, 3])
    ctx = g.node("Reshape", [ctx, g.const(f"{name}.attn.merge_heads", [0, 0, d])], f"{name}.attn.context.Reshape")
    ctx = g.cast(ctx, att, lin, f"{name}.attn.context.Cast")
    out = g.cast(g.linear(ctx, block.attn.proj, f"{name}.attn.proj", lin), lin, F32, f"{name}.attn.proj.Cast")
    x = g.node("Add", [x, out], f"{name}.attn.Residual")

    # MLP: x + fc2(gelu(fc1(x))) with exact erf GELU: 0.5 * y * (1 + erf(y / sqrt(2))).
    h = g.cast(g.layer_norm(x, block.norm2, f"{name}.norm2"), F32, lin, f"{name}.norm2.Cast")
    y = g.linear(h, block.mlp.fc1, f"{name}.mlp.fc1", lin)
    dt = _NP[lin]
    erf = g.node("Erf", [g.node("Div", [y, g.weight(f"{name}.mlp.gelu.sqrt2", np.array(math.sqrt(2.0), dt))],
                                f"{name}.mlp.gelu.Div")], f"{name}.mlp.gelu.Erf")
    erf = g.node("Add", [erf, g.weight(f"{name}.mlp.gelu.one", np.array(1.0, dt))], f"{name}.mlp.gelu.Add")
    y = g.node("Mul", [g.node("Mul", [y, erf], f"{name}.mlp.gelu.Mul"),
                       g.weight(f"{name}.mlp.gelu.half", np.array(0.5, dt))], f"{name}.mlp.gelu.Half")
    out = g.cast(g.linear(y, block.mlp.fc2, f"{name}.mlp.fc2", lin), lin, F32, f"{name}.mlp.fc2.Cast")
    return g.node("Add", [x, out], f"{name}.mlp.Residual")

