"""The float steps of the export: fp32 and fp16 graphs, and bf16 as a runtime mode of the fp32 file.

fp32 is checked against PyTorch on random inputs at several batch sizes and resolutions (the graph
must be exact) and measured on the held-out images; fp16 is gated on the held-out images; bf16 is the
fp32 file under OpenVINO's bf16 inference precision, gated on this machine's CPU.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.manifest import Artifact
from ijepa_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

from .context import ExportContext
from .errors import ExportError
from .gates import Gate, gate_images, gate_shapes, random_cases, reference_outputs, require, run_batches, summary
from .manifest_builder import artifact_entry, mode_entry
from .onnx_checks import check_onnx, check_typed_graph
from .onnx_graph import GraphSpec, build_graph
from .options import fp32_shapes
from .precisions import ExportPrecision
from .progress import stage

log = logging.getLogger(__name__)


def export_graph(ctx: ExportContext, record: ExportPrecision) -> Artifact:
    """fp32 / fp16: build the typed graph, check it, gate it."""
    opts = ctx.options
    opset = max(opts.opset, record.facts.min_opset)
    with stage(f"{record.name} ONNX: build"):
        path = build_graph(ctx.model, GraphSpec(record.graph, opts.resolution, opset), ctx.work / record.facts.file)
    check_onnx(path)
    matmuls = check_typed_graph(path)
    if record.name == "fp32":  # the references first: PyTorch and ONNX Runtime never hold memory together
        cases = random_cases(fp32_shapes(opts, ctx.loaded.architecture, ctx.size))
        with stage("fp32 ONNX: PyTorch reference outputs"):
            references = [reference_outputs(ctx.model, case.pixel_values) for case in cases]
    ctx.park_model()
    backend = OnnxRuntimeBackend(path)
    label = path.name
    if record.name == "fp32":
        with stage("fp32 ONNX: parity gate vs PyTorch at several batch sizes and resolutions"):
            validation = gate_shapes(backend, cases, references, record.gate, label)
        if ctx.eval_set is not None:
            outputs = run_batches(backend, ctx.eval_set.batches, label)
            validation.update({k: v for k, v in gate_images(outputs, ctx.eval_set, Gate(), label).items()
                               if k in ("metrics", "inputs", "weak_estimate")})
    else:
        with stage(f"{record.name} ONNX: gate vs PyTorch fp32 on held-out images"):
            outputs = run_batches(backend, ctx.eval_set.batches, label)
            validation = require(gate_images(outputs, ctx.eval_set, record.gate, label))
    validation["matmul_dtypes"] = matmuls
    return artifact_entry(ctx.manifest, record, path, validation, opset)


def export_runtime_mode(ctx: ExportContext, record: ExportPrecision) -> Artifact:
    """bf16: the fp32 file run with a bf16 inference precision, gated on this machine."""
    from ijepa_deploy.runtime.backends.openvino_backend import cpu_has_bf16, openvino_unavailable_reason

    reason = openvino_unavailable_reason()
    if reason:
        raise ExportError(f"{record.name} is gated with OpenVINO, which is missing: {reason}")
    if not cpu_has_bf16():
        raise ExportError(f"this CPU has no native bf16 (AVX512-BF16 or AMX), so {record.name} cannot be gated "
                          "here; export it on the machine that will serve it")
    base = ctx.manifest.artifacts[record.facts.mode_of]
    label = f"{base.file} in {record.name}"
    with stage(f"{record.name}: gate {base.file} with a {record.facts.inference_precision} inference precision "
               "(OpenVINO) vs PyTorch fp32 on held-out images"):
        outputs = run_openvino(ctx, ctx.work / base.file, record.facts.inference_precision, label)
        validation = require(gate_images(outputs, ctx.eval_set, record.gate, label))
    validation["backend"] = "openvino"
    return mode_entry(ctx.manifest, record, base, validation)


def gate_openvino_bf16(ctx: ExportContext, record: ExportPrecision, path: Path, validation: dict) -> str | None:
    """OpenVINO runs a quantized file's float ops (attention, LayerNorm) in bf16 by default on CPUs
    that have it, which is what makes it fast there: gate that too, and record whether it holds."""
    from ijepa_deploy.runtime.backends.openvino_backend import cpu_has_bf16, openvino_unavailable_reason

    if not record.facts.openvino_fast:
        return None
    if openvino_unavailable_reason() or not cpu_has_bf16():
        return "f32"
    with stage(f"{record.name}: gate under OpenVINO with bf16 float ops"):
        outputs = run_openvino(ctx, path, "bf16", f"{path.name} (OpenVINO bf16)")
    result = gate_images(outputs, ctx.eval_set, record.gate, f"{path.name} under OpenVINO bf16")
    validation["openvino_bf16"] = {"passed": result["passed"], "metrics": result["metrics"]}
    log.info("  %s under OpenVINO bf16: %s%s", record.name, summary(result),
             "" if result["passed"] else " -> OpenVINO will run it in f32")
    return "bf16" if result["passed"] else "f32"


def run_openvino(ctx: ExportContext, path: Path, inference_precision: str, label: str) -> dict[str, np.ndarray]:
    """Outputs of `path` under OpenVINO on the held-out images (a private compile cache, removed after)."""
    from ijepa_deploy.runtime.backends.openvino_backend import OpenVinoBackend

    ctx.park_model()
    cache = ctx.work / ".ovcache"
    try:
        backend = OpenVinoBackend(path, inference_precision=inference_precision, cache_dir=cache)
        return run_batches(backend, ctx.eval_set.batches, label)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
