"""OpenVINO backend: our own ONNX files on x86 CPUs (fp32, int8, int8-cpu; bf16 as an inference hint).

OpenVINO reads the same ONNX artifacts (its low-precision transformations turn our Q/DQ pairs into
int8 kernels, VNNI/AMX where the CPU has them). The precision is explicit: fp32 artifacts run with
an `f32` inference precision, because OpenVINO's default on CPUs with bf16 support is bf16, which is
not what the fp32 gate certified; `bf16` is asked for by name. A batch is split over the compiled
model's streams, so one caller keeps every core busy; concurrent callers share a pool of infer
requests. Compiled models are cached (`CACHE_DIR`) so a second load is fast.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .base import Backend, BackendError

INSTALL_HINT = "pip install 'ijepa-deploy[openvino]'"


def openvino_unavailable_reason() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"OpenVINO is not installed ({INSTALL_HINT})"
    return None


def cpu_has_bf16() -> bool:
    """True when OpenVINO reports native bf16 on this CPU (AVX512-BF16 or AMX)."""
    import openvino as ov

    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # an OpenVINO without the CPU plugin
        return False


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ijepa-deploy" / "openvino"


class _RequestPool:
    """Infer requests handed out several at a time, atomically (no caller holds some while waiting)."""

    def __init__(self, requests: list):
        self._free = list(requests)
        self.size = len(requests)
        self._cond = threading.Condition()

    def take(self, n: int) -> list:
        n = max(1, min(n, self.size))
        with self._cond:
            self._cond.wait_for(lambda: len(self._free) >= n)
            taken, self._free = self._free[:n], self._free[n:]
        return taken

    def give(self, requests: list) -> None:
        with self._cond:
            self._free.extend(requests)
            self._cond.notify_all()


class OpenVinoBackend(Backend):
    """Runs an ONNX artifact with OpenVINO on the CPU."""

    name = "openvino"

    def __init__(self, model_path: str | Path, *, inference_precision: str = "f32", threads: int | None = None,
                 streams: int | None = None, hint: str = "throughput", cache_dir: str | Path | None = None):
        reason = openvino_unavailable_reason()
        if reason:
            raise BackendError(f"cannot use the OpenVINO backend: {reason}")
        import openvino as ov

        model_path = Path(model_path)
        if not model_path.is_file():
            raise BackendError(f"ONNX file not found: {model_path}")
        if inference_precision not in ("f32", "bf16"):
            raise BackendError(f"OpenVINO inference precision must be f32 or bf16, got {inference_precision!r}")
        if inference_precision == "bf16" and not cpu_has_bf16():
            raise BackendError("this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 would be emulated and "
                               "slower than fp32; use --precision fp32 or int8-cpu here")
        if hint not in ("latency", "throughput"):
            raise BackendError(f"OpenVINO hint must be latency or throughput, got {hint!r}")
        core = ov.Core()
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        try:
            cache.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(cache)})
        except OSError:
            pass  # no writable cache: compile every time
        config = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": hint.upper()}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if streams:
            config["NUM_STREAMS"] = int(streams)
        try:
            self.compiled = core.compile_model(str(model_path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line messages
            raise BackendError(f"OpenVINO cannot load {model_path}: {str(exc).strip().splitlines()[0][:300]}") from None
        self.inference_precision = inference_precision
        self.input_name = self.compiled.inputs[0].get_any_name()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.output_shapes = {o.get_any_name(): tuple(d.get_length() if d.is_static else None
                                                      for d in o.get_partial_shape()) for o in self.compiled.outputs}
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        count = max(self.streams, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._pool = _RequestPool([self.compiled.create_infer_request() for _ in range(count)])

    def run(self, pixel_values: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        names = outputs or self.output_names
        pixels = np.ascontiguousarray(pixel_values, dtype=np.float32)
        parts = min(self.streams, len(pixels))
        chunks = np.array_split(pixels, parts) if parts > 1 else [pixels]
        requests = self._pool.take(len(chunks))
        try:
            if len(requests) < len(chunks):  # the pool is smaller than the split: one request per call
                chunks = [pixels]
            for request, chunk in zip(requests, chunks):
                request.start_async({self.input_name: chunk})
            results = []
            for request, _ in zip(requests, chunks):
                request.wait()
                results.append({n: request.get_tensor(n).data.copy() for n in names})
        finally:
            self._pool.give(requests)
        if len(results) == 1:
            return results[0]
        return {n: np.concatenate([r[n] for r in results]) for n in names}

    def describe(self) -> str:
        return f"openvino ({self.inference_precision}, {self.streams} stream(s))"
