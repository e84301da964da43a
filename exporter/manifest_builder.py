"""Building the manifest of an export: the artifact folder's description, then one record per artifact."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.identity import with_identity
from ijepa_deploy.contract.manifest import (Artifact, BatchRange, CheckpointRecord, FileRecord, GateInputs, IOSpec,
                                            Manifest, ResolutionRange, TensorSpec, Validation)
from ijepa_deploy.contract.naming import data_name
from ijepa_deploy.contract.records import load_record
from ijepa_deploy.reference_model import LoadedCheckpoint

from .onnx_graph import INPUT_NAME
from .options import ExportOptions
from .precisions import ExportPrecision


def tool_versions() -> dict:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("ijepa-deploy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    versions.setdefault("onnxruntime", versions.get("onnxruntime-gpu", "missing"))
    versions.setdefault("ijepa-deploy", "source")
    return versions


def _resolution(arch, size: tuple[int, int], dynamic: bool) -> ResolutionRange:
    p = arch.patch_size

    def snap(x: float) -> int:
        return max(p, int(round(x / p)) * p)

    native = (arch.image_size, arch.image_size)
    if not dynamic:
        return ResolutionRange(False, native, tuple(size), tuple(size), p)
    return ResolutionRange(True, native, (snap(size[0] / 2), snap(size[1] / 2)), (snap(size[0] * 2), snap(size[1] * 2)),
                           p)


def new_manifest(loaded: LoadedCheckpoint, options: ExportOptions, name: str, size: tuple[int, int],
                 folder: Path) -> Manifest:
    """The manifest of an export before any artifact is added."""
    arch = loaded.architecture
    dynamic = options.resolution is None
    h, w = ("height", "width") if dynamic else size
    tokens = "tokens" if dynamic else arch.tokens(*size)
    outputs = [TensorSpec("last_hidden_state", "float32", ("batch", tokens, arch.hidden_size)),
               TensorSpec("embedding", "float32", ("batch", arch.hidden_size))]
    if arch.num_labels:
        outputs.append(TensorSpec("logits", "float32", ("batch", arch.num_labels)))
    return Manifest(
        name=name, variant=loaded.source.get("variant"), encoder=loaded.source.get("encoder"),
        architecture=arch, checkpoint=load_record(CheckpointRecord, loaded.source),
        preprocessing=dataclasses.replace(loaded.preprocessing, height=size[0], width=size[1]),
        io=IOSpec((TensorSpec(INPUT_NAME, "float32", ("batch", arch.num_channels, h, w)),), tuple(outputs)),
        batch=BatchRange(1, options.opt_batch or options.max_batch, options.max_batch),
        resolution=_resolution(arch, size, dynamic),
        labels={str(k): v for k, v in loaded.id2label.items()} if loaded.id2label else None,
        tools=tool_versions(), created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        folder=folder)


def gate_inputs_record(path: Path, images: int) -> GateInputs:
    record = FileRecord.of(path)
    return GateInputs(record.path, record.sha256, record.bytes, images)


def artifact_entry(manifest: Manifest, record: ExportPrecision, path: Path, validation: dict, opset: int,
                   **extra) -> Artifact:
    """The manifest record of a built and gated ONNX artifact (its identity included)."""
    data = path.with_name(data_name(path.name))
    files = (FileRecord.of(path),) + ((FileRecord.of(data),) if data.exists() else ())
    facts = record.facts
    artifact = Artifact(precision=facts.name, file=path.name, data_file=data.name if data.exists() else None,
                        files=files, bytes=sum(f.bytes for f in files), opset=opset,
                        validation=load_record(Validation, validation), tensorrt=facts.tensorrt,
                        min_compute_capability=facts.min_compute_capability, cpu_only=facts.cpu_only,
                        backends=facts.backends, description=facts.description, **extra)
    return with_identity(manifest, artifact)


def mode_entry(manifest: Manifest, record: ExportPrecision, base: Artifact, validation: dict) -> Artifact:
    """The record of a runtime mode (bf16): the base artifact's files run with another inference precision."""
    facts = record.facts
    artifact = Artifact(precision=facts.name, file=base.file, data_file=base.data_file, files=base.files,
                        bytes=base.bytes, opset=base.opset, validation=load_record(Validation, validation),
                        tensorrt=False, cpu_only=True, mode_of=facts.mode_of,
                        inference_precision=facts.inference_precision, backends=facts.backends,
                        description=facts.description)
    return with_identity(manifest, artifact)
