"""What only the exporter needs to know of each precision: the graph it builds, the quantization
recipe placed on it, and the gate it must pass. The facts everyone shares (file, backends, TensorRT,
compute capability, opset) are `contract.precisions`; this adds to them by name.

Adding a precision is one entry in each table (plus its graph policy or recipe when new).
"""

from __future__ import annotations

from dataclasses import dataclass

from ijepa_deploy.contract.errors import UsageError
from ijepa_deploy.contract.precisions import PrecisionFacts, precision_facts, with_fp32

from .errors import ExportError
from .gates import FP32_GATE, HALF_GATE, QUANT_GATE, Gate
from .onnx_graph import FP16_GRAPH, FP32_GRAPH, QDQ_FP16_GRAPH, GraphPrecision


@dataclass(frozen=True)
class QuantRecipe:
    """Where Q/DQ goes and in which types (weights always per output channel, activations per tensor)."""

    activation: str  # "int8" (symmetric, signed), "uint8" (asymmetric), "fp8e4m3" (E4M3, symmetric)
    weight: str  # "int8" (symmetric) or "fp8e4m3"
    tensorrt_rules: bool  # must pass the TensorRT Q/DQ lint (which also enforces fc1 only with fc2)
    target: str


@dataclass(frozen=True)
class ExportPrecision:
    """A precision as the export builds it: the shared facts plus graph policy, recipe and gate."""

    facts: PrecisionFacts
    gate: Gate
    graph: GraphPrecision | None = None  # dtype policy of the graph built (None: a runtime mode)
    recipe: QuantRecipe | None = None  # Q/DQ placed on that graph (None: float)

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def quantized(self) -> bool:
        return self.recipe is not None


_TENSORRT = "TensorRT 10+/11 strongly typed"
RECIPES: dict[str, tuple[Gate, GraphPrecision | None, QuantRecipe | None]] = {
    "fp32": (FP32_GATE, FP32_GRAPH, None),
    "fp16": (HALF_GATE, FP16_GRAPH, None),
    "bf16": (HALF_GATE, None, None),
    "int8": (QUANT_GATE, QDQ_FP16_GRAPH, QuantRecipe("int8", "int8", tensorrt_rules=True,
                                                      target=f"{_TENSORRT}; also ONNX Runtime")),
    "int8-cpu": (QUANT_GATE, FP32_GRAPH, QuantRecipe("uint8", "int8", tensorrt_rules=False,
                                                      target="ONNX Runtime / OpenVINO on CPUs")),
    "fp8": (QUANT_GATE, QDQ_FP16_GRAPH, QuantRecipe("fp8e4m3", "fp8e4m3", tensorrt_rules=True,
                                                     target="TensorRT 10+/11 on compute capability >= 8.9")),
}


def get(name: str) -> ExportPrecision:
    try:
        facts = precision_facts(name)
    except Exception:
        raise ExportError(f"unknown precision {name!r}; choose from {', '.join(RECIPES)}") from None
    gate, graph, recipe = RECIPES[name]
    return ExportPrecision(facts, gate, graph, recipe)


def resolve(names) -> list[ExportPrecision]:
    """The records for `names` with fp32 added, in registry order (every artifact another one depends
    on comes first)."""
    try:
        ordered = with_fp32(names)
    except UsageError as exc:
        raise ExportError(str(exc)) from None
    return [get(n) for n in ordered]
