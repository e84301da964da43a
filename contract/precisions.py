"""What each precision is, as everything but the exporter needs to know it.

One record per precision: its ONNX file (or the file it is a runtime mode of), the backends that can
run it, whether OpenVINO runs it at full speed, whether TensorRT builds plans from it and from which
compute capability, and the opset it needs. The exporter adds what only it needs (graph dtype policy,
quantization recipe, gate) by name in `exporter/precisions.py`; the manifest records these facts per
artifact, so a reader of an artifact folder trusts the manifest, not this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError
from .naming import onnx_name


@dataclass(frozen=True)
class PrecisionFacts:
    name: str
    description: str
    file: str | None  # the ONNX file written (None: a runtime mode of `mode_of`'s file)
    quantized: bool = False
    tensorrt: bool = False  # TensorRT can build a plan from the file
    min_compute_capability: str | None = None  # for TensorRT plans
    cpu_only: bool = False
    min_opset: int = 17
    mode_of: str | None = None
    inference_precision: str | None = None  # the backend's inference precision for a runtime mode
    backends: tuple[str, ...] | None = None  # None: any backend
    openvino_fast: bool = False  # OpenVINO runs it at full speed on x86 CPUs (auto prefers it there)

    @property
    def low_precision(self) -> bool:
        return self.name != "fp32"


PRECISIONS: dict[str, PrecisionFacts] = {p.name: p for p in (
    PrecisionFacts("fp32", "float32 reference artifact (plain ONNX, TensorRT-readable)", onnx_name("fp32"),
                   tensorrt=True, openvino_fast=True),
    PrecisionFacts("fp16", "float16 MatMuls/attention/GELU, float32 LayerNorm/residual/position table (GPUs)",
                   onnx_name("fp16"), tensorrt=True),
    PrecisionFacts("bf16", "the fp32 file run with a bfloat16 inference precision (OpenVINO on CPUs with "
                           "AVX512-BF16 or AMX)", None, mode_of="fp32", inference_precision="bf16", cpu_only=True,
                   backends=("openvino",), openvino_fast=True),
    PrecisionFacts("int8", "symmetric int8 Q/DQ (float16 scales) on q/k/v/proj/fc1/fc2 inputs, per-channel weights, "
                           "float16 float region, float32 LayerNorm/residual (TensorRT 10+/11 strongly typed)",
                   onnx_name("int8"), quantized=True, tensorrt=True, min_opset=19, openvino_fast=True),
    PrecisionFacts("int8-cpu", "uint8 activations / int8 weights Q/DQ on the fp32 graph (ONNX Runtime and OpenVINO "
                               "CPU kernels); not for TensorRT, which rejects UINT8", onnx_name("int8-cpu"),
                   quantized=True, cpu_only=True, openvino_fast=True),
    PrecisionFacts("fp8", "E4M3 Q/DQ (float16 scales) on q/k/v/proj/fc1/fc2 inputs, per-channel weights, float16 "
                          "float region (TensorRT on Ada/Hopper/Blackwell, compute capability >= 8.9)", onnx_name("fp8"),
                   quantized=True, tensorrt=True, min_compute_capability="8.9", min_opset=19),
)}


def precision_facts(name: str) -> PrecisionFacts:
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def with_fp32(names) -> list[str]:
    """`names` in registry order with fp32 added: every artifact depends on the fp32 one (the gates'
    reference graph, bf16's file, int8-cpu's float graph), so it is always exported first."""
    wanted = {"fp32", *(n.strip() for n in names if n and n.strip())}
    for name in wanted:
        precision_facts(name)
    return [p for p in PRECISIONS if p in wanted]


def default_plan_precisions(exported: dict) -> list[str]:
    """The precisions `build-engine` and build_engines.sh build when none is named: every exported
    artifact TensorRT can build except fp32 (the reference), or fp32 when it is the only one.
    `exported` maps precision -> manifest artifact (anything with a `tensorrt` flag)."""
    buildable = [p for p, art in exported.items() if art.tensorrt]
    return [p for p in buildable if p != "fp32"] or buildable
