"""The layer table: every quantizable weight MatMul of an I-JEPA block, the tensor it reads, who
produces that tensor, and TensorRT's fc-pair rule. Calibration, outlier migration, the Q/DQ lint,
simulation and the mixed-precision search all address layers through this one table; the ONNX
builder names its nodes `<layer>.MatMul` (e.g. `blocks.3.mlp.fc1.MatMul`).

Inputs (calibration keys) per block, and where an outlier migration of each can be folded:
    attn.qkv   norm1's output, read by q, k and v     fold into norm1 (gain, bias)
    attn.proj  the attention context (softmax-weighted mean of v, rows sum to 1)   fold into v
    mlp.fc1    norm2's output                          fold into norm2
    mlp.fc2    GELU's output (nothing linear produces it)   an explicit shift in the graph
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str  # the layer's path inside a block, e.g. "attn.query"
    input: str  # the input tensor it reads, e.g. "attn.qkv"


@dataclass(frozen=True)
class Input:
    key: str  # e.g. "attn.qkv"
    producer: str  # module path inside the block whose parameters absorb a migration, or "" (explicit)
    readers: tuple[str, ...]  # roles reading it

    @property
    def foldable(self) -> bool:
        return bool(self.producer)


ROLES = (Role("attn.query", "attn.qkv"), Role("attn.key", "attn.qkv"), Role("attn.value", "attn.qkv"),
         Role("attn.proj", "attn.proj"), Role("mlp.fc1", "mlp.fc1"), Role("mlp.fc2", "mlp.fc2"))
INPUTS = (Input("attn.qkv", "norm1", ("attn.query", "attn.key", "attn.value")),
          Input("mlp.fc1", "norm2", ("mlp.fc1",)),
          Input("attn.proj", "attn.value", ("attn.proj",)),
          Input("mlp.fc2", "", ("mlp.fc2",)))
FC_PAIR = ("mlp.fc1", "mlp.fc2")  # TensorRT: fc1 is quantized only together with its fc2
_ROLE = {r.name: r for r in ROLES}
_LAYER = re.compile(r"^blocks\.(?P<block>\d+)\.(?P<role>attn\.(?:query|key|value|proj)|mlp\.fc[12])$")


def layer_names(num_blocks: int) -> list[str]:
    """Every quantizable weight MatMul, by the name the ONNX graph gives it (without `.MatMul`)."""
    return [f"blocks.{i}.{role.name}" for i in range(num_blocks) for role in ROLES]


def split(layer: str) -> tuple[int, str]:
    """'blocks.3.attn.key' -> (3, 'attn.key')."""
    m = _LAYER.match(layer)
    if not m:
        raise ValueError(f"{layer!r} is not a quantizable layer name")
    return int(m["block"]), m["role"]


def input_of(layer: str) -> str:
    """The calibration key of a layer's input: blocks.3.attn.key -> blocks.3.attn.qkv."""
    block, role = split(layer)
    return f"blocks.{block}.{_ROLE[role].input}"


def input_keys(num_blocks: int) -> list[str]:
    """Every calibration key, block by block, in INPUTS order."""
    return [f"blocks.{i}.{inp.key}" for i in range(num_blocks) for inp in INPUTS]


def input_spec(key: str) -> Input:
    """The Input record of a calibration key such as blocks.3.mlp.fc2."""
    role = key.split(".", 2)[2]
    return next(i for i in INPUTS if i.key == role)


def matmul_node(layer: str) -> str:
    return f"{layer}.MatMul"


def layer_of_node(node: str) -> str | None:
    """The layer a MatMul node belongs to, or None for any other node (attention, head...)."""
    name = node.removesuffix(".MatMul")
    return name if name != node and _LAYER.match(name) else None


def module(model, path: str):
    """The submodule at a dotted path ('blocks.3.mlp.fc1') of the reference model."""
    for part in path.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


def fc_partner(layer: str) -> str | None:
    """fc2 for fc1 and fc1 for fc2 of the same block; None for attention layers."""
    block, role = split(layer)
    if role not in FC_PAIR:
        return None
    return f"blocks.{block}.{FC_PAIR[1] if role == FC_PAIR[0] else FC_PAIR[0]}"


def fc2_node_of(node: str) -> str | None:
    """For an fc1 MatMul node of any block naming ('<prefix>mlp.fc1.MatMul'), its fc2 node; else None."""
    suffix = matmul_node(FC_PAIR[0])
    return node[: -len(suffix)] + matmul_node(FC_PAIR[1]) if node.endswith(suffix) else None


def with_fc_pairs(float_layers: set[str]) -> set[str]:
    """TensorRT's rule: fc1 is quantized only together with its fc2, so a float fc2 makes fc1 float."""
    return float_layers | {fc_partner(n) for n in float_layers if split(n)[1] == FC_PAIR[1]}


def layer_flops(model, tokens: int) -> dict[str, float]:
    """FLOPs per image of every quantizable layer at `tokens` tokens."""
    return {name: 2.0 * tokens * m.in_features * m.out_features
            for name in layer_names(len(model.blocks)) for m in [module(model, name)]}
