"""The precision registry: one record per precision says everything the exporter, the gates, the
TensorRT tools and the manifest need to know about it.

Adding a precision is one entry here (plus its recipe when it is quantized): its graph dtype policy,
its quantization recipe, its gate, its file name, whether TensorRT builds it and from which compute
capability, whether it is only for CPUs, and the opset it needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import ExportError
from .onnx_graph import FP16_GRAPH, FP32_GRAPH, QDQ_FP16_GRAPH, GraphPrecision


@dataclass(frozen=True)
class Gate:
    """What an artifact must reach against the PyTorch fp32 reference (None: reported, not gated)."""

    min_cosine: float | None = None  # pooled embedding, per sample (fp32's shape checks)
    max_abs: float | None = None  # last_hidden_state (fp32's shape checks)
    min_centered_cosine: float | None = None  # worst held-out image, set mean removed
    min_topk_agreement: float | None = None  # neighbour agreement over the held-out set
    k: int = 5

    def failures(self, metrics: dict) -> list[str]:
        """Which bounds `metrics` (from runtime.similarity.compare or a shape check) misses."""
        out = []
        for key, bound, sense in (("pooled_cosine", self.min_cosine, ">="), ("max_abs", self.max_abs, "<="),
                                  ("centered_cosine", self.min_centered_cosine, ">="),
                                  (f"top{self.k}_agreement", self.min_topk_agreement, ">=")):
            if bound is None or key not in metrics:
                continue
            value = metrics[key]
            ok = value >= bound if sense == ">=" else value <= bound
            if not ok or value != value:  # NaN never passes
                out.append(f"{key} {value:.6g} (needs {sense} {bound:g})")
        return out

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class QuantRecipe:
    """Where Q/DQ goes and in which types (weights always per output channel, activations per tensor)."""

    activation: str  # "int8" (symmetric, signed), "uint8" (asymmetric), "fp8e4m3" (E4M3, symmetric)
    weight: str  # "int8" (symmetric) or "fp8e4m3"
    tensorrt_rules: bool  # must pass the TensorRT Q/DQ lint (which also enforces fc1 only with fc2)
    target: str

    @property
    def fc_pair(self) -> bool:
        return self.tensorrt_rules


@dataclass(frozen=True)
class Precision:
    name: str
    description: str
    gate: Gate
    file: str | None = None  # the ONNX file written (None: a runtime mode of `mode_of`'s file)
    graph: GraphPrecision | None = None  # dtype policy of the graph built
    recipe: QuantRecipe | None = None  # Q/DQ placed on that graph (None: float)
    tensorrt: bool = False  # TensorRT can build a plan from the file
    min_compute_capability: str | None = None  # for TensorRT plans
    cpu_only: bool = False
    min_opset: int = 17
    mode_of: str | None = None
    inference_precision: str | None = None  # the backend's inference precision for a runtime mode
    backends: tuple[str, ...] | None = None  # None: any backend

    @property
    def quantized(self) -> bool:
        return self.recipe is not None

    @property
    def low_precision(self) -> bool:
        return self.name != "fp32"


FP32_GATE = Gate(min_cosine=0.99999, max_abs=1e-4)
HALF_GATE = Gate(min_centered_cosine=0.999)
QUANT_GATE = Gate(min_centered_cosine=0.98, min_topk_agreement=0.9)

PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", "float32 reference artifact (plain ONNX, TensorRT-readable)", FP32_GATE,
              file="model_fp32.onnx", graph=FP32_GRAPH, tensorrt=True),
    Precision("fp16", "float16 MatMuls/attention/GELU, float32 LayerNorm/residual/position table (GPUs)", HALF_GATE,
              file="model_fp16.onnx", graph=FP16_GRAPH, tensorrt=True),
    Precision("bf16", "the fp32 file run with a bfloat16 inference precision (OpenVINO on CPUs with "
                      "AVX512-BF16 or AMX)", HALF_GATE, mode_of="fp32", inference_precision="bf16", cpu_only=True,
              backends=("openvino",)),
    Precision("int8", "symmetric int8 Q/DQ (float16 scales) on q/k/v/proj/fc1/fc2 inputs, per-channel weights, "
                      "float16 float region, float32 LayerNorm/residual (TensorRT 10+/11 strongly typed)", QUANT_GATE,
              file="model_int8.onnx", graph=QDQ_FP16_GRAPH, tensorrt=True, min_opset=19,
              recipe=QuantRecipe("int8", "int8", tensorrt_rules=True,
                                 target="TensorRT 10+/11 strongly typed; also ONNX Runtime")),
    Precision("int8-cpu", "uint8 activations / int8 weights Q/DQ on the fp32 graph (ONNX Runtime and OpenVINO "
                          "CPU kernels); not for TensorRT, which rejects UINT8", QUANT_GATE,
              file="model_int8_cpu.onnx", graph=FP32_GRAPH, cpu_only=True,
              recipe=QuantRecipe("uint8", "int8", tensorrt_rules=False, target="ONNX Runtime / OpenVINO on CPUs")),
    Precision("fp8", "E4M3 Q/DQ (float16 scales) on q/k/v/proj/fc1/fc2 inputs, per-channel weights, float16 "
                     "float region (TensorRT on Ada/Hopper/Blackwell, compute capability >= 8.9)", QUANT_GATE,
              file="model_fp8.onnx", graph=QDQ_FP16_GRAPH, tensorrt=True, min_compute_capability="8.9",
              min_opset=19,
              recipe=QuantRecipe("fp8e4m3", "fp8e4m3", tensorrt_rules=True,
                                 target="TensorRT 10+/11 on compute capability >= 8.9")),
)}


def get(name: str) -> Precision:
    if name not in PRECISIONS:
        raise ExportError(f"unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def resolve(names: list[str] | tuple[str, ...]) -> list[Precision]:
    """The records for `names` (fp32 always included), in registry order: every artifact another
    one depends on (fp32 for bf16 and int8-cpu) comes first."""
    wanted = {"fp32", *(n.strip() for n in names if n.strip())}
    for name in wanted:
        get(name)
    return [p for p in PRECISIONS.values() if p.name in wanted]


def tensorrt_buildable() -> list[str]:
    return [p.name for p in PRECISIONS.values() if p.tensorrt and p.file]
