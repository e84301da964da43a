"""The quantized steps of the export (int8, int8-cpu, fp8): calibrate once, migrate outliers, place
Q/DQ, gate; mixed precision when the gate would otherwise fail.

1. Calibration (calibration.py) and the outlier migration (migration.py) are shared by every
   quantized precision of one export; the migration is checked to leave the float model unchanged.
2. The mixed-precision search (mixed_precision.py) proposes plans; `FileEvaluator` judges them by
   building, linting and gating the real file, or by simulating them in PyTorch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.manifest import Artifact, CalibrationRecord, QuantizationRecord
from ijepa_deploy.contract.records import load_record
from ijepa_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

from .calibration import calibrate, histogram_collector, observe, ranges
from .context import ExportContext
from .errors import ExportError
from .float_steps import gate_openvino_bf16
from .gates import gate_images, reference_outputs, run_batches, summary
from .layers import input_of, layer_flops, layer_names
from .manifest_builder import artifact_entry
from .migration import apply_migration, plan_migration
from .mixed_precision import SearchSpace, search
from .onnx_checks import check_onnx, check_typed_graph
from .onnx_graph import GraphSpec, QuantPlan, build_graph
from .precisions import ExportPrecision, get, resolve
from .progress import stage
from .qdq_lint import lint_file
from .quantization import Simulation, act_quant, quantization_record, remove_onnx, simulate

log = logging.getLogger(__name__)


class FileEvaluator:
    """Judges a quantization plan for one precision: the real file gated on the held-out images, or
    the plan simulated on the calibration images."""

    def __init__(self, ctx: ExportContext, record: ExportPrecision, path: Path, opset: int):
        self.ctx, self.record, self.path, self.opset = ctx, record, path, opset

    def evaluate(self, plan: QuantPlan) -> dict:
        ctx, record, path = self.ctx, self.record, self.path
        remove_onnx(path)
        kept = len(layer_names(len(ctx.model.blocks))) - len(plan.activations)
        with stage(f"{record.name}: build Q/DQ graph ({len(plan.activations)} quantized MatMuls, {kept} kept float)"):
            build_graph(ctx.model, GraphSpec(record.graph, ctx.options.resolution, self.opset, plan), path)
        if record.recipe.tensorrt_rules:
            violations = lint_file(path)
            if violations:
                raise ExportError(f"{path.name} breaks {len(violations)} TensorRT Q/DQ rule(s), first: {violations[0]}")
        check_onnx(path)
        with stage(f"{record.name}: gate vs PyTorch fp32 on held-out images"):
            ctx.park_model()
            backend = OnnxRuntimeBackend(path)
            outputs = run_batches(backend, ctx.eval_set.batches, path.name)
            del backend
        result = gate_images(outputs, ctx.eval_set, record.gate, path.name)
        if not result["passed"]:
            log.info("  %s: %s -> below the gate", record.name, summary(result))
        return result

    def simulate(self, plan: QuantPlan) -> Simulation:
        calibration = self.ctx.calibration
        return simulate(self.ctx.model, plan, calibration.pixels, calibration.reference, self.record.gate.k)


def export_quantized(ctx: ExportContext, record: ExportPrecision) -> Artifact:
    """int8 / int8-cpu / fp8: calibrate (shared), place Q/DQ, gate; mixed precision when needed."""
    opts, recipe = ctx.options, record.recipe
    prepare_calibration(ctx)
    calib_ranges = ranges(ctx.calibration, opts.calib_method, recipe.activation != "uint8", ctx.migration)
    layers = layer_names(len(ctx.model.blocks))
    acts = {layer: act_quant(*calib_ranges[input_of(layer)], recipe.activation) for layer in layers}
    shifts = {}
    if ctx.migration is not None:
        shifts = {layer: z for layer in acts if (z := ctx.migration.explicit_shift(input_of(layer))) is not None}
    opset = max(opts.opset, record.facts.min_opset)
    path = ctx.work / record.facts.file
    arch = ctx.loaded.architecture
    space = SearchSpace(recipe, acts, layer_flops(ctx.model, arch.tokens(*ctx.size)),
                        arch.gflops_per_image(*ctx.size) * 1e9, shifts, opts.min_quantized_fraction)
    try:
        validation, attempts = search(space, record.gate, FileEvaluator(ctx, record, path, opset), opts.mixed_precision,
                                      can_simulate=bool(ctx.calibration.pixels))
    except BaseException:
        remove_onnx(path)
        raise
    final = attempts[-1]
    validation["matmul_dtypes"] = check_typed_graph(path)
    openvino_precision = gate_openvino_bf16(ctx, record, path, validation)
    calibration = {"method": opts.calib_method, "count": len(ctx.calib_images),
                   "images": [p.name for p in ctx.calib_images]}
    quant = quantization_record(recipe, acts, final.float_layers, final.quantized_fraction, attempts,
                                opts.smooth_alpha, opts.outlier_shift)
    if ctx.migration is not None:
        quant["migration_check"] = ctx.migration_check
    return artifact_entry(ctx.manifest, record, path, validation, opset,
                          calibration=load_record(CalibrationRecord, calibration),
                          quantization=load_record(QuantizationRecord, quant), openvino_precision=openvino_precision)


def prepare_calibration(ctx: ExportContext) -> None:
    """Calibrate once per export; fold the outlier migration (shift + SmoothQuant scale) into the
    model; re-collect histograms after it when the method needs them."""
    if ctx.calibration is not None:
        return
    opts = ctx.options
    symmetries = tuple(sorted({p.recipe.activation != "uint8" for p in resolve(opts.precisions) if p.quantized}))
    migrate = bool(opts.smooth_alpha) or opts.outlier_shift
    keep = min(opts.sensitivity_images, len(ctx.calib_images))
    if len(ctx.calib_images) < 16:
        log.warning("  warning: calibrating on %d images: the ranges fit those images only (a few hundred "
                    "representative photos for production)", len(ctx.calib_images))
    with stage(f"calibrate ({opts.calib_method}, {len(ctx.calib_images)} images, streaming)"):
        ctx.calibration = calibrate(ctx.model, ctx.calib_images, ctx.preprocessor, method=opts.calib_method,
                                    symmetries=() if migrate else symmetries, batch_size=opts.calib_batch,
                                    keep_pixels=keep)
    if not migrate:
        return
    with stage(f"outlier migration (per-channel shift {'on' if opts.outlier_shift else 'off'}, SmoothQuant alpha "
               f"{opts.smooth_alpha or 'off'}): fold into LayerNorm, v and the MatMuls"):
        ctx.migration = plan_migration(ctx.model, ctx.calibration, opts.smooth_alpha, opts.outlier_shift)
        apply_migration(ctx.model, ctx.migration)
        ctx.parking.weights_changed()
        ctx.migration_check = check_migration_exact(ctx)
    if opts.calib_method != "minmax":
        with stage(f"calibrate {opts.calib_method} histograms of the migrated activations"):
            ctx.calibration.histograms = {(opts.calib_method, s): histogram_collector(opts.calib_method, s)
                                          for s in symmetries}
            explicit = {k: z for k, z in ctx.migration.shift.items() if ctx.migration.explicit_shift(k) is not None}
            observe(ctx.model, ctx.calib_images, ctx.preprocessor, ctx.calibration, opts.calib_batch,
                    histograms_only=True, shifts=explicit)


def check_migration_exact(ctx: ExportContext) -> dict:
    """The migration must not change the float function: the migrated model against the reference
    outputs computed before folding, with the fp32 gate (relative beyond magnitude 1)."""
    gate = get("fp32").gate
    if ctx.eval_set is not None:
        pixels, ref = ctx.eval_set.batches[0][:2], {k: v[:2] for k, v in ctx.eval_set.reference.items()}
    else:
        pixels, ref = ctx.calibration.pixels[0][:2], {k: v[:2] for k, v in ctx.calibration.reference.items()}
    got = reference_outputs(ctx.model, pixels)
    scale = float(np.abs(ref["last_hidden_state"]).max())
    check = {"images": int(len(pixels)),
             "max_abs": float(np.abs(got["last_hidden_state"] - ref["last_hidden_state"]).max()),
             "pooled_cosine": float(np.min((got["embedding"] * ref["embedding"]).sum(1)
                                           / np.linalg.norm(got["embedding"], axis=1)
                                           / np.linalg.norm(ref["embedding"], axis=1)))}
    failures = gate.failures({"pooled_cosine": check["pooled_cosine"], "max_abs": check["max_abs"] / max(scale, 1.0)})
    check["passed"] = not failures
    if failures:
        raise ExportError(f"the outlier migration changed the float model ({'; '.join(failures)}): this is a bug; "
                          "export with --smooth-alpha 0 --no-outlier-shift meanwhile")
    return check
