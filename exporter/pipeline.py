"""The export as a pipeline of steps you can see:

    check options -> open the folder transaction -> reference outputs on held-out images
    -> one step per precision (float graph | runtime mode | quantized graph), each gated
    -> extra steps (TensorRT plans) -> build script, manifest, report -> rename into place

`export(loaded, options)` runs it for a loaded checkpoint and returns the artifact folder. Nothing
is left behind unless every step passed (see folder.py); PyTorch weights leave memory while a
backend gates an artifact (see memory.py).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.atomic import write_atomic
from ijepa_deploy.contract.canons import training_note
from ijepa_deploy.contract.manifest import Manifest
from ijepa_deploy.contract.naming import GATE_INPUTS_NAME, REPORT_NAME
from ijepa_deploy.contract.records import dump_record
from ijepa_deploy.reference_model import LoadedCheckpoint
from ijepa_deploy.runtime.preprocessing import Preprocessor

from . import report
from .context import ExportContext
from .float_steps import export_graph, export_runtime_mode
from .folder import export_transaction
from .gates import EvalSet, summary, warn_if_weak
from .manifest_builder import gate_inputs_record, new_manifest
from .memory import WeightParking
from .options import ExportOptions, check_options, chosen_preprocessing, image_split
from .precisions import ExportPrecision
from .progress import stage
from .quantized import export_quantized
from .trtexec_script import write_build_script

log = logging.getLogger(__name__)


def export(loaded: LoadedCheckpoint, options: ExportOptions) -> Path:
    """Export `loaded` as validated artifacts into `output_dir/<name>/` and return that folder.
    Quantized precisions fold the outlier migration into `loaded.model` in place (exact in float)."""
    name = options.name or loaded.name
    records = check_options(loaded.architecture, options, name)
    loaded = dataclasses.replace(loaded, preprocessing=chosen_preprocessing(loaded.preprocessing,
                                                                            loaded.architecture, options))
    note = training_note(loaded.source.get("kind", ""), loaded.preprocessing)
    if note and options.preprocessing is not None:  # the checkpoint's own choice was noted when it loaded
        log.info("  note: %s", note)
    output_dir = Path(options.output_dir)
    with export_transaction(output_dir, name, options.overwrite) as work:
        parking = WeightParking(work)
        ctx = prepare(loaded, options, name, work, records, parking)
        for record in records:
            artifact = step_for(record)(ctx, record)
            ctx.manifest = dataclasses.replace(ctx.manifest, artifacts={**ctx.manifest.artifacts, record.name: artifact})
            log.info("  %s: %s", record.name, summary(dump_record(artifact.validation)))
        manifest = ctx.manifest
        for extra in options.extra_steps:
            manifest = extra(work, manifest) or manifest
        parking.clear()
        finish(work, manifest)
    log.info("artifacts ready: %s", output_dir / name)
    return output_dir / name


def step_for(record: ExportPrecision):
    """The step that builds a precision's artifact."""
    if record.facts.mode_of:
        return export_runtime_mode
    return export_quantized if record.quantized else export_graph


def prepare(loaded: LoadedCheckpoint, options: ExportOptions, name: str, work: Path, records: list[ExportPrecision],
            parking: WeightParking) -> ExportContext:
    """The manifest skeleton, the image split, and the reference outputs on the held-out images (kept
    with the artifacts as gate_inputs.npy: TensorRT plans are gated on them later, on the target GPU)."""
    size = options.resolution or (loaded.preprocessing.height, loaded.preprocessing.width)
    manifest = new_manifest(loaded, options, name, size, work)
    preprocessor = Preprocessor(manifest.preprocessing, size)
    calib, held_out = image_split(options, records)
    eval_set = None
    if held_out:
        with stage(f"reference outputs on {len(held_out)} held-out images"):
            eval_set = EvalSet.build(loaded.model, held_out, preprocessor, options.max_batch)
        if any(p.facts.low_precision for p in records):
            warn_if_weak(eval_set)
        path = work / GATE_INPUTS_NAME
        np.save(path, np.concatenate(eval_set.batches).astype(np.float16), allow_pickle=False)
        manifest = dataclasses.replace(manifest, gate_inputs=gate_inputs_record(path, len(eval_set.names)))
    return ExportContext(loaded, options, work, manifest, preprocessor, size, calib, eval_set, parking)


def finish(work: Path, manifest: Manifest) -> None:
    """What every artifact folder holds besides its artifacts: the build script, the manifest, the report."""
    write_build_script(work, manifest)
    manifest.save(work)
    write_atomic(work / REPORT_NAME, report.render(manifest))
