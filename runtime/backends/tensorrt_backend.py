"""TensorRT backend: runs a plan built by `ijepa-export build-engine`, behind the same interface.

Name-based I/O (TensorRT 10/11: set_input_shape, set_tensor_address, execute_async_v3), device
and pinned host buffers through cuda-python, optional CUDA graph per batch shape. Before a plan
is deserialized, the manifest's record of how it was built is checked against this machine:
a plan only runs on the TensorRT version and GPU compute capability it was built for (unless it
was built version- or hardware-compatible).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from ..manifest import Manifest
from .base import Backend, BackendError

INSTALL_HINT = "pip install 'ijepa-deploy[tensorrt]' on the GPU machine"


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python layout
    return cudart


def _cuda_call(result):
    """cuda-python returns (error, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA call failed with error {int(err)} ({err})")
    return values[0] if len(values) == 1 else values


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT imports and a CUDA device exists; otherwise what is missing."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return f"TensorRT is not installed ({INSTALL_HINT})"
    try:
        cudart = _cudart()
    except ImportError:
        return f"cuda-python is not installed ({INSTALL_HINT})"
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # driver library missing
        return f"no CUDA driver ({exc})"
    if int(err) != 0 or count == 0:
        return "no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES)"
    return None


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (the plan file's GPU tag)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def local_environment(device: int = 0) -> dict:
    """TensorRT version, GPU name and compute capability of this machine."""
    import tensorrt as trt

    props = _cuda_call(_cudart().cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"tensorrt_version": trt.__version__, "gpu_name": name.strip("\x00 "),
            "compute_capability": f"{props.major}.{props.minor}"}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def check_engine_compat(entry: dict, local: dict, folder: str | Path = "ARTIFACTS") -> None:
    """Refuse, with one line, a plan this machine cannot run. `entry` is the manifest's engine record."""
    built_trt, here_trt = _version(entry["tensorrt_version"]), _version(local["tensorrt_version"])
    built_cc, here_cc = _version(entry["compute_capability"]), _version(local["compute_capability"])
    if entry.get("version_compatible"):
        trt_ok = built_trt[:1] == here_trt[:1] and here_trt >= built_trt
    else:
        trt_ok = built_trt == here_trt
    hardware = entry.get("hardware_compatibility")
    cc_ok = here_cc >= (8, 0) if hardware == "ampere_plus" else built_cc == here_cc
    if trt_ok and cc_ok:
        return
    sm_built, sm_here = "".join(map(str, built_cc)), "".join(map(str, here_cc))
    raise BackendError(
        f"{entry.get('file', 'engine')} was built with TensorRT {entry['tensorrt_version']} for sm_{sm_built} "
        f"({entry.get('gpu_name', '?')}); this machine has TensorRT {local['tensorrt_version']} on sm_{sm_here} "
        f"({local.get('gpu_name', '?')}); rebuild with `ijepa-export build-engine --artifacts {folder}`")


class TensorRTBackend(Backend):
    """One execution context over a plan; calls are serialized (a context is not thread-safe)."""

    name = "tensorrt"

    def __init__(self, folder: str | Path, manifest: Manifest, precision: str, *, use_cuda_graphs: bool = False,
                 device: int = 0):
        import tensorrt as trt

        folder = Path(folder)
        entry = manifest.engines.get(precision) or {}
        if "file" not in entry:
            raise BackendError(f"{folder} has no TensorRT plan for {precision}")
        check_engine_compat(entry, local_environment(device), folder)
        self._cudart = _cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if entry.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True
        self.engine = self._runtime.deserialize_cuda_engine((folder / entry["file"]).read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {entry['file']}; rebuild it on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.min_shape, _, self.max_shape = (tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
        self._stream = _cuda_call(self._cudart.cudaStreamCreate())
        self._lock = threading.Lock()
        self._use_graphs = use_cuda_graphs
        self._graphs: dict[tuple, object] = {}
        # Device and pinned host buffers sized for the profile's largest shape.
        self.context.set_input_shape(self.input_name, self.max_shape)
        self._device, self._host = {}, {}
        for name in [self.input_name, *self.output_names]:
            shape = tuple(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * 4  # every I/O tensor is float32
            self._device[name] = _cuda_call(self._cudart.cudaMalloc(nbytes))
            host_ptr = _cuda_call(self._cudart.cudaMallocHost(nbytes))
            self._host[name] = (host_ptr, nbytes)
            self.context.set_tensor_address(name, int(self._device[name]))

    def _host_array(self, name: str, shape: tuple) -> np.ndarray:
        import ctypes

        ptr, nbytes = self._host[name]
        buf = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(buf, dtype=np.float32, count=int(np.prod(shape))).reshape(shape)

    def run(self, pixel_values: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        shape = tuple(pixel_values.shape)
        if any(s < lo or s > hi for s, lo, hi in zip(shape, self.min_shape, self.max_shape)):
            raise BackendError(f"input shape {shape} is outside the engine profile {self.min_shape}..{self.max_shape}; "
                               "rebuild with wider --min/--max-batch or --min/--max-resolution")
        names = outputs or self.output_names
        cu = self._cudart
        kind_h2d, kind_d2h = cu.cudaMemcpyKind.cudaMemcpyHostToDevice, cu.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            self.context.set_input_shape(self.input_name, shape)
            staged = self._host_array(self.input_name, shape)
            staged[...] = pixel_values
            _cuda_call(cu.cudaMemcpyAsync(self._device[self.input_name], self._host[self.input_name][0],
                                          staged.nbytes, kind_h2d, self._stream))
            self._execute(shape)
            shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in names}
            for n in names:
                nbytes = int(np.prod(shapes[n])) * 4
                _cuda_call(cu.cudaMemcpyAsync(self._host[n][0], self._device[n], nbytes, kind_d2h, self._stream))
            _cuda_call(cu.cudaStreamSynchronize(self._stream))
            return {n: self._host_array(n, shapes[n]).copy() for n in names}

    def _execute(self, shape: tuple) -> None:
        cu = self._cudart
        if not self._use_graphs:
            if not self.context.execute_async_v3(self._stream):
                raise BackendError("TensorRT execution failed (see the TensorRT log)")
            return
        graph_exec = self._graphs.get(shape)
        if graph_exec is None:  # first call at this shape: run once, then capture
            self.context.execute_async_v3(self._stream)
            _cuda_call(cu.cudaStreamBeginCapture(self._stream, cu.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            self.context.execute_async_v3(self._stream)
            graph = _cuda_call(cu.cudaStreamEndCapture(self._stream))
            graph_exec = _cuda_call(cu.cudaGraphInstantiate(graph, 0))
            self._graphs[shape] = graph_exec
        _cuda_call(cu.cudaGraphLaunch(graph_exec, self._stream))

    def close(self) -> None:
        cu = getattr(self, "_cudart", None)
        if cu is None:
            return
        for ptr in getattr(self, "_device", {}).values():
            cu.cudaFree(ptr)
        for ptr, _ in getattr(self, "_host", {}).values():
            cu.cudaFreeHost(ptr)
        self._device, self._host = {}, {}
