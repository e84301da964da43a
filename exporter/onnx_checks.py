"""Structural checks of a written ONNX file: onnx.checker with full inference, and strict typing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
from onnx import TensorProto

from .errors import ExportError
from .progress import stage


def check_onnx(path: Path) -> None:
    """onnx.checker with the file path (external data) and full shape/type inference."""
    with stage(f"onnx.checker full check: {path.name}"):
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise ExportError(f"{path.name} fails onnx.checker: {str(exc).splitlines()[0][:300]}") from None


def check_typed_graph(path: Path) -> dict[str, int]:
    """Strict type inference over the whole graph (every op's inputs agree), float32 graph I/O.
    Returns how many MatMuls compute in each dtype (a quantized MatMul counts as its weights' type),
    and under "outputs" the dtypes their outputs carry (what a strongly typed TensorRT network
    builds the surrounding float layers in)."""
    model = onnx.load(str(path), load_external_data=False)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise ExportError(f"{path.name} does not type-check: {str(exc).splitlines()[0][:300]}") from None
    for value in [*inferred.graph.input, *inferred.graph.output]:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ExportError(f"{path.name}: graph {value.name!r} is not float32")
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    producers = {o: n for n in inferred.graph.node for o in n.output}
    counts: Counter = Counter()
    outputs: Counter = Counter()
    for node in inferred.graph.node:
        if node.op_type != "MatMul":
            continue
        outputs[TensorProto.DataType.Name(types.get(node.output[0], 0)).lower()] += 1
        weight = node.input[1]
        source = producers.get(weight)
        if source is not None and source.op_type == "DequantizeLinear":
            counts[TensorProto.DataType.Name(types.get(source.input[0], 0)).lower()] += 1
        else:
            counts[TensorProto.DataType.Name(types.get(node.input[0], 0)).lower()] += 1
    return {**counts, "outputs": dict(outputs)}
