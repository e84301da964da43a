"""FP16: a typed float16 graph with float32 islands, compiled as-is by strongly typed TensorRT.

The graph builder writes float16 directly (no after-the-fact conversion to repair): the
q/k/v/proj/fc1/fc2 MatMuls, GELU and attention compute in float16; the residual stream,
LayerNorm, the position-table Resize, pooling and the head stay float32; every boundary is an
explicit Cast; graph inputs and outputs are float32.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
from onnx import TensorProto

from .onnx_graph import PRECISIONS, GraphSpec, build_graph
from .progress import say, stage
from .validation import Case, ReferenceOutputs, validate_onnx


def check_typed_graph(path: Path) -> dict[str, int]:
    """Strict type inference over the whole graph (every op's inputs agree), float32 graph I/O.
    Returns how many MatMuls compute in each dtype."""
    from .export import ExportError

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
    counts = Counter(TensorProto.DataType.Name(types.get(n.input[0], 0)).lower()
                     for n in inferred.graph.node if n.op_type == "MatMul")
    return dict(counts)


def export_fp16(model, work: Path, options, eval_cases: list[Case], reference: ReferenceOutputs) -> tuple[Path, dict]:
    """Build, check and gate model_fp16.onnx in `work`."""
    from .export import check_onnx

    with stage("fp16 ONNX: build (float16 MatMuls/attention, float32 LayerNorm/residual)"):
        path = build_graph(model, GraphSpec(PRECISIONS["fp16"], options.resolution, options.opset),
                           work / "model_fp16.onnx")
    check_onnx(path)
    matmuls = check_typed_graph(path)
    say(f"  fp16 graph type-checks; MatMuls by dtype: {matmuls}")
    with stage("fp16 ONNX: gate vs PyTorch fp32 on held-out inputs"):
        validation = validate_onnx(path, "fp16", eval_cases, reference)
    validation["matmul_dtypes"] = matmuls
    say(f"  fp16: worst cosine {validation['worst_cosine']:.6f}, worst max abs {validation['worst_max_abs']:.2e}")
    return path, validation
