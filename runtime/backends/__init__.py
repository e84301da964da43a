"""Backends, and the one place that chooses and opens one for an artifact.

Every backend is opened the same way: the manifest names the file, its sha256 is verified, the
backend is built from the file path, and its inputs/outputs are checked against the manifest.
"""

from __future__ import annotations

import platform

from ijepa_deploy.contract.errors import BackendError
from ijepa_deploy.contract.manifest import Manifest
from ijepa_deploy.contract.precisions import PRECISIONS

from ..config import BACKENDS, EmbedConfig
from .base import Backend, check_io

__all__ = ["BACKENDS", "Backend", "BackendError", "open_backend"]


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def open_backend(manifest: Manifest, config: EmbedConfig) -> Backend:
    """Open `config.precision` of `manifest` on `config.backend` (auto: a TensorRT plan built for this
    GPU when usable, else OpenVINO on x86 CPUs when installed, else ONNX Runtime)."""
    precision, backend = config.precision, config.backend
    art = manifest.artifact(precision)
    allowed = list(art.backends or BACKENDS[1:])
    if backend != "auto" and backend not in allowed:
        mode = f"; it is a {art.inference_precision} mode that {' and '.join(allowed)} run" if art.mode_of else ""
        raise BackendError(f"{precision} runs on {' or '.join(allowed)} only (asked for {backend}){mode}")

    if backend in ("auto", "tensorrt") and "tensorrt" in allowed:
        from .tensorrt_backend import TensorRTBackend, select_engine

        record, reason = select_engine(manifest, precision, config.device)
        if record is not None:
            path = manifest.verify_engine(record) if config.verify else manifest.path(record.file, "engine")
            return _checked(TensorRTBackend(path, record, device=config.device, cuda_graphs=config.cuda_graphs),
                            manifest, record.file)
        if backend == "tensorrt":
            raise BackendError(reason)

    onnx_path = manifest.verify(precision) if config.verify else manifest.path(art.file)
    if backend == "openvino" or (backend == "auto" and not config.providers and _prefer_openvino(precision, allowed)):
        from .openvino_backend import OpenVinoBackend, cpu_has_bf16

        inference = art.inference_precision or art.openvino_precision or "f32"
        if inference == "bf16" and not art.inference_precision and not cpu_has_bf16():
            inference = "f32"  # a quantized file's float ops were gated in bf16 too, but this CPU lacks it
        opened = OpenVinoBackend(onnx_path, inference_precision=inference, threads=config.threads,
                                 streams=config.streams, cache_dir=config.openvino_cache,
                                 static_batch=min(config.batch_size or manifest.batch.opt, manifest.batch.max),
                                 static_size=(manifest.preprocessing.height, manifest.preprocessing.width))
        return _checked(opened, manifest, art.file)
    if "onnxruntime" not in allowed:
        raise BackendError(f"{precision} needs OpenVINO: {_openvino_reason()}")
    from .onnxruntime_backend import OnnxRuntimeBackend

    return _checked(OnnxRuntimeBackend(onnx_path, providers=config.providers, threads=config.threads,
                                       graph_optimization_level=config.graph_optimization_level), manifest, art.file)


def _openvino_reason() -> str:
    from .openvino_backend import openvino_unavailable_reason

    return openvino_unavailable_reason() or "it is installed"


def _prefer_openvino(precision: str, allowed: list[str]) -> bool:
    from .openvino_backend import openvino_unavailable_reason

    facts = PRECISIONS.get(precision)
    if "openvino" not in allowed or facts is None or not facts.openvino_fast:
        return False
    return _is_x86() and openvino_unavailable_reason() is None


def _checked(backend: Backend, manifest: Manifest, file: str) -> Backend:
    try:
        check_io(backend, manifest, file)
    except BackendError:
        backend.close()
        raise
    return backend
