"""OpenVINO backend: our own ONNX files on x86 CPUs (fp32, int8, int8-cpu; bf16 as an inference hint).

OpenVINO reads the same ONNX artifacts (its low-precision transformations turn our Q/DQ pairs into
int8 kernels, VNNI/AMX where the CPU has them). The precision is explicit: fp32 artifacts run with
an `f32` inference precision, because OpenVINO's default on CPUs with bf16 support is bf16, which is
not what the fp32 gate certified; `bf16` is asked for by name.

Speed: full batches (the Embedder's batch size at the artifact's native resolution) run on a model
compiled for that static shape (OpenVINO folds the position-table resize and picks kernels for the
exact shape), split over the CPU's streams so one caller keeps every core busy: measured on ViT-H
int8 at batch 8, 6-9 % faster than `compile_model(file)` with defaults on the same file. Any other
shape (batch 1, the last partial batch, another resolution) runs on a dynamic one-stream model with
every thread. Each is compiled when first needed; concurrent callers share pools of infer requests;
compiled models are cached (`CACHE_DIR`) so a second load is fast.
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
                 streams: int | None = None, cache_dir: str | Path | bool | None = None, static_batch: int | None = None,
                 static_size: tuple[int, int] | None = None):
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
        self._core = ov.Core()
        # One cache folder per inference precision: OpenVINO 2026.4's cache key does not tell an f32
        # compilation of a file from a bf16 one, and the bf16 model then ran f32 blobs (NaN outputs).
        # cache_dir=False compiles every time: a cached ViT-H fp32 load takes 2 s instead of 10 s, but
        # OpenVINO's blob import peaks at 7.6 GB RSS instead of 5.2 GB.
        if cache_dir is not False:
            cache = (Path(cache_dir) if cache_dir else default_cache_dir()) / inference_precision
            try:
                cache.mkdir(parents=True, exist_ok=True)
                self._core.set_property({"CACHE_DIR": str(cache)})
            except OSError:
                pass  # no writable cache: compile every time
        cores = int(threads or os.cpu_count() or 1)
        self.streams = streams or max(1, min(cores // 2 if cores > 8 else cores, 8))
        # OpenVINO pins its inference threads to cores, counting from the first: two embedders of one
        # process at threads=1 each were pinned to the same core (measured: 1.24x instead of 1.76x for two
        # host threads). A share of the machine is never pinned; all of it keeps OpenVINO's pinning.
        base = {"INFERENCE_PRECISION_HINT": inference_precision, "INFERENCE_NUM_THREADS": cores,
                "ENABLE_CPU_PINNING": cores >= (os.cpu_count() or 1)}
        self._configs = {"static": {**base, "NUM_STREAMS": self.streams}, "dynamic": {**base, "NUM_STREAMS": 1}}
        self.inference_precision = inference_precision
        self.compute_precision = "bf16" if inference_precision == "bf16" else "file"
        self._path = model_path
        self._model = self._read()
        self.input_name = self._model.inputs[0].get_any_name()
        self.output_names = [o.get_any_name() for o in self._model.outputs]
        self.output_shapes = {o.get_any_name(): tuple(d.get_length() if d.is_static else None
                                                      for d in o.get_partial_shape()) for o in self._model.outputs}
        # Full batches at the native size run on a static model split over the streams; any other shape
        # on a dynamic one-stream model. Each is compiled the first time it is needed.
        self.static_batch = static_batch if static_batch and static_size and static_batch % self.streams == 0 \
            else None
        self._static_shape = (static_batch, 3, *static_size) if self.static_batch else None
        self._pools: dict[str, _RequestPool] = {}
        self._lock = threading.Lock()

    def _read(self):
        try:
            return self._core.read_model(str(self._path))
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line messages
            raise BackendError(f"OpenVINO cannot read {self._path}: {str(exc).strip().splitlines()[0][:300]}") from None

    def _pool(self, kind: str) -> _RequestPool:
        with self._lock:
            if kind not in self._pools:
                model, self._model = self._model or self._read(), None  # compiled models keep what they need
                if kind == "static":
                    model.reshape({self.input_name: [self.static_batch // self.streams, *self._static_shape[1:]]})
                try:
                    compiled = self._core.compile_model(model, "CPU", self._configs[kind])
                except Exception as exc:
                    raise BackendError(f"OpenVINO cannot compile {self._path}: "
                                       f"{str(exc).strip().splitlines()[0][:300]}") from None
                count = max(self.streams, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
                self._pools[kind] = _RequestPool([compiled.create_infer_request() for _ in range(count)])
        return self._pools[kind]

    def run(self, pixel_values: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        names = outputs or self.output_names
        pixels = np.ascontiguousarray(pixel_values, dtype=np.float32)
        if self._static_shape is not None and pixels.shape == self._static_shape:
            pool, chunks = self._pool("static"), np.split(pixels, self.streams)
        else:
            pool, chunks = self._pool("dynamic"), [pixels]
        requests = pool.take(len(chunks))
        try:
            for request, chunk in zip(requests, chunks):
                request.start_async({self.input_name: chunk})
            results = []
            for request in requests:
                request.wait()
                results.append({k: request.get_tensor(k).data.copy() for k in names})
        finally:
            pool.give(requests)
        return results[0] if len(results) == 1 else {k: np.concatenate([r[k] for r in results]) for k in names}

    def describe(self) -> str:
        static = f", {self.streams} streams for batches of {self.static_batch}" if self.static_batch else ""
        return f"openvino ({self.inference_precision}{static})"
