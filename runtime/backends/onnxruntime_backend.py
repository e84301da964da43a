"""ONNX Runtime backend: CPU, and CUDA / TensorRT execution providers with onnxruntime-gpu."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import Backend, BackendError

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}
_DEVICE_PROVIDERS = {"cpu": ["CPUExecutionProvider"],
                     "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                     "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}


def import_onnxruntime():
    """onnxruntime, imported with its telemetry off unless the host asked for it (ORT_DISABLE_TELEMETRY).

    Since 1.29, ONNX Runtime on Linux starts a 1DS telemetry uploader thread at import. A process that
    forks after that (gunicorn --preload, multiprocessing with fork) has children that hang forever in
    ORT's static destructors when they exit normally (the thread's condition variable has a waiter that
    only existed in the parent); an inference library in a service should not phone home either. The
    variable only takes effect if it is set before onnxruntime is first imported in the process."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX artifact with ONNX Runtime. `InferenceSession.run` is thread-safe."""

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, *, providers: list[str] | str | None = None,
                 threads: int | None = None, graph_optimization_level: str = "all"):
        ort = import_onnxruntime()
        model_path = Path(model_path)
        if not model_path.is_file():
            raise BackendError(f"ONNX file not found: {model_path}")
        available = ort.get_available_providers()
        if isinstance(providers, str):
            providers = _DEVICE_PROVIDERS.get(providers, providers.split(","))
        providers = providers or ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendError(f"ONNX Runtime providers {missing} are not available (have {available}); "
                               "install onnxruntime-gpu instead of onnxruntime for CUDA/TensorRT")
        options = ort.SessionOptions()
        if graph_optimization_level not in _LEVELS:
            raise BackendError(f"graph optimization level must be one of {sorted(_LEVELS)}")
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[graph_optimization_level])
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise BackendError(f"ONNX Runtime cannot load {model_path}: {str(exc).splitlines()[0][:300]}") from None
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = {o.name: tuple(d if isinstance(d, int) else None for d in o.shape)
                              for o in self.session.get_outputs()}

    def run(self, pixel_values: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        names = outputs or self.output_names
        results = self.session.run(names, {self.input_name: np.ascontiguousarray(pixel_values, dtype=np.float32)})
        return dict(zip(names, results))

    def describe(self) -> str:
        return f"onnxruntime ({', '.join(p.removesuffix('ExecutionProvider') for p in self.providers)})"
