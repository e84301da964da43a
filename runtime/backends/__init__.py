"""Backends, and the one place that chooses and opens one for an artifact.

Every backend is opened the same way: the manifest names the file, its sha256 is verified, the
backend is built from the file path, and its inputs/outputs are checked against the manifest.
"""

from __future__ import annotations

import platform

from ..errors import BackendError
from ..manifest import Manifest
from .base import Backend, check_io

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")
OPENVINO_PRECISIONS = ("fp32", "bf16", "int8", "int8-cpu")  # files OpenVINO runs at full speed on a CPU

__all__ = ["BACKENDS", "Backend", "BackendError", "open_backend"]


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def open_backend(manifest: Manifest, precision: str, backend: str = "auto", *, verify: bool = True,
                 providers: list[str] | str | None = None, threads: int | None = None,
                 graph_optimization_level: str = "all", openvino: dict | None = None, device: int = 0) -> Backend:
    """Open `precision` of `manifest` on `backend` (auto: a TensorRT plan built for this GPU when
    usable, else OpenVINO on x86 CPUs when installed, else ONNX Runtime)."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    art = manifest.artifact(precision)
    allowed = art.backends or list(BACKENDS[1:])
    if backend != "auto" and backend not in allowed:
        raise BackendError(f"{precision} runs on {' or '.join(allowed)} only (asked for {backend})"
                           + ("; ONNX Runtime has no bf16 kernels for x86 CPUs" if precision == "bf16" else ""))

    if backend in ("auto", "tensorrt") and "tensorrt" in allowed:
        from .tensorrt_backend import TensorRTBackend, select_engine

        record, reason = select_engine(manifest, precision, device)
        if record is not None:
            path = manifest.verify_engine(record) if verify else manifest.path(record.file, "engine")
            return _checked(TensorRTBackend(path, record, device=device), manifest, record.file)
        if backend == "tensorrt":
            raise BackendError(reason)

    onnx_path = manifest.verify(precision) if verify else manifest.path(art.file)
    if backend == "openvino" or (backend == "auto" and not providers and _prefer_openvino(precision, allowed)):
        from .openvino_backend import OpenVinoBackend

        from .openvino_backend import cpu_has_bf16

        options = {"threads": threads, **(openvino or {})}
        options.setdefault("static_batch", int(manifest.batch["opt"]))  # the Embedder's default batch
        options.setdefault("static_size", (manifest.preprocessing.height, manifest.preprocessing.width))
        inference = art.inference_precision or art.openvino_precision or "f32"
        if inference == "bf16" and not art.inference_precision and not cpu_has_bf16():
            inference = "f32"  # a quantized file's float ops were gated in bf16 too, but this CPU lacks it
        return _checked(OpenVinoBackend(onnx_path, inference_precision=inference, **options), manifest, art.file)
    if "onnxruntime" not in allowed:
        raise BackendError(f"{precision} needs OpenVINO: {_openvino_reason()}")
    from .onnxruntime_backend import OnnxRuntimeBackend

    return _checked(OnnxRuntimeBackend(onnx_path, providers=providers, threads=threads,
                                       graph_optimization_level=graph_optimization_level), manifest, art.file)


def _openvino_reason() -> str:
    from .openvino_backend import openvino_unavailable_reason

    return openvino_unavailable_reason() or "it is installed"


def _prefer_openvino(precision: str, allowed: list[str]) -> bool:
    from .openvino_backend import openvino_unavailable_reason

    if "openvino" not in allowed or precision not in OPENVINO_PRECISIONS:
        return False
    return _is_x86() and openvino_unavailable_reason() is None


def _checked(backend: Backend, manifest: Manifest, file: str) -> Backend:
    try:
        check_io(backend, manifest, file)
    except BackendError:
        backend.close()
        raise
    return backend
