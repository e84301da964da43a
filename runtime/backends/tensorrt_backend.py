"""TensorRT backend: runs a plan recorded in the manifest, behind the same interface as every backend.

Production shape: a pool of execution contexts, each with its own non-blocking CUDA stream and its
own device and pinned host buffers, so concurrent callers run concurrently (a context is not
thread-safe; the pool hands each call one). Buffers are sized from the context's shapes for the
batch at hand and grow when needed. Name-based I/O (TensorRT 10/11: set_input_shape,
set_tensor_address, execute_async_v3) with every result checked and every I/O dtype read from the
engine. The CUDA device is set on every call (it is per thread). No CUDA graphs: a graph captured
for one shape must not be replayed after its context ran another (NVIDIA/TensorRT#3798), and the
pool already overlaps work; plans are checked against this machine before deserialization.
"""

from __future__ import annotations

import ctypes
import queue
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .base import Backend, BackendError

if TYPE_CHECKING:
    from ijepa_deploy.contract.manifest import Engine, Manifest

# Version-compatible plans also run on these later majors (TensorRT's support matrix).
CROSS_MAJOR = {(10, 11), (8, 10)}


def install_hint(cuda_major: int | None = None) -> str:
    if cuda_major in (12, 13):
        return f"pip install 'ijepa-deploy[tensorrt-cu{cuda_major}]' on the GPU machine"
    return "pip install 'ijepa-deploy[tensorrt-cu12]', or [tensorrt-cu13] for a CUDA 13 driver, on the GPU machine"


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python layout
    return cudart


def cuda_check(result, what: str = "CUDA call"):
    """cuda-python returns (error, *values): raise with the error's name, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        cudart = _cudart()
        try:
            name = cudart.cudaGetErrorName(err)[1].decode()
        except Exception:
            name = str(err)
        raise BackendError(f"{what} failed: {name} ({int(err)})")
    return values[0] if len(values) == 1 else values


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT imports and a CUDA device is usable; otherwise what is missing."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return f"TensorRT is not installed ({install_hint()})"
    try:
        cudart = _cudart()
    except ImportError:
        return f"cuda-python is not installed ({install_hint()})"
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # driver library missing
        return f"no CUDA driver ({exc})"
    if int(err) != 0:
        name = cudart.cudaGetErrorName(err)[1].decode() if hasattr(cudart, "cudaGetErrorName") else str(err)
        try:
            driver = int(cudart.cudaDriverGetVersion()[1]) // 1000
            runtime = int(cudart.cudaRuntimeGetVersion()[1]) // 1000
        except Exception:
            driver = runtime = None
        if driver is not None and runtime is not None and runtime > driver:
            return (f"cudaGetDeviceCount failed with {name}: cuda-python targets CUDA {runtime} but the driver supports "
                    f"CUDA {driver}; {install_hint(driver)}")
        return f"cudaGetDeviceCount failed with {name} (check the driver and CUDA_VISIBLE_DEVICES)"
    if count == 0:
        return "no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES)"
    return None


def local_environment(device: int = 0) -> dict:
    """TensorRT version, GPU name and compute capability of `device` on this machine."""
    import tensorrt as trt

    cudart = _cudart()
    count = cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if not 0 <= device < count:
        raise BackendError(f"CUDA device {device} does not exist ({count} visible)")
    props = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"tensorrt_version": trt.__version__, "gpu_name": name.strip("\x00 "),
            "compute_capability": f"{props.major}.{props.minor}"}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def engine_compat_problem(entry: "Engine | dict", local: dict) -> str | None:
    """Why this machine cannot run the plan `entry` describes, or None."""
    get = entry.get if isinstance(entry, dict) else (lambda k, d=None: getattr(entry, k, d))
    built_trt, here_trt = _version(get("tensorrt_version")), _version(local["tensorrt_version"])
    built_cc, here_cc = _version(get("compute_capability")), _version(local["compute_capability"])
    if get("version_compatible"):
        same_major = built_trt[:1] == here_trt[:1] or (built_trt[0], here_trt[0]) in CROSS_MAJOR
        trt_ok = same_major and here_trt >= built_trt
    else:
        trt_ok = built_trt == here_trt
    hardware = get("hardware_compatibility")
    cc_ok = here_cc >= (8, 0) if hardware == "ampere_plus" else built_cc == here_cc
    if trt_ok and cc_ok:
        return None
    sm_built, sm_here = "".join(map(str, built_cc)), "".join(map(str, here_cc))
    return (f"{get('file', 'engine')} was built with TensorRT {get('tensorrt_version')} for sm_{sm_built} "
            f"({get('gpu_name', '?')}); this machine has TensorRT {local['tensorrt_version']} on sm_{sm_here} "
            f"({local.get('gpu_name', '?')})")


def check_engine_compat(entry: "Engine | dict", local: dict, folder: str | Path = "ARTIFACTS") -> None:
    """Refuse, with one line, a plan this machine cannot run."""
    problem = engine_compat_problem(entry, local)
    if problem:
        raise BackendError(f"{problem}; rebuild with `ijepa-export build-engine --artifacts {folder}`")


def select_engine(manifest: "Manifest", precision: str, device: int = 0) -> tuple["Engine | None", str]:
    """The recorded plan this machine can run for `precision` (same GPU and TensorRT version first),
    or None and the reason."""
    engines = manifest.engines_for(precision)
    folder = manifest.folder or manifest.name
    if not engines:
        return None, (f"{folder} has no TensorRT plan for {precision}; build one on this GPU with "
                      f"`ijepa-export build-engine --artifacts {folder} --precision {precision}`")
    reason = tensorrt_unavailable_reason()
    if reason:
        return None, f"cannot use the TensorRT backend: {reason}"
    local = local_environment(device)
    usable = [e for e in engines if engine_compat_problem(e, local) is None]
    if usable:
        usable.sort(key=lambda e: (e.gpu_name != local["gpu_name"], e.tensorrt_version != local["tensorrt_version"]))
        return usable[0], ""
    problems = "; ".join(engine_compat_problem(e, local) for e in engines)
    return None, f"{problems}; rebuild with `ijepa-export build-engine --artifacts {folder} --precision {precision}`"


class _HostBuffer:
    """Pinned host memory viewed as numpy."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.ptr = cuda_check(_cudart().cudaMallocHost(nbytes), "cudaMallocHost")

    def view(self, dtype, shape) -> np.ndarray:
        count = int(np.prod(shape))
        buf = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(int(self.ptr))
        return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)

    def free(self) -> None:
        _cudart().cudaFreeHost(self.ptr)


class _Slot:
    """One execution context with its own stream and buffers (grown to the largest shape seen)."""

    def __init__(self, engine):
        cudart = _cudart()
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda_check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                                 "cudaStreamCreateWithFlags")
        self.device: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)
        self.host: dict[str, _HostBuffer] = {}

    def buffers(self, name: str, nbytes: int) -> tuple[int, _HostBuffer]:
        cudart = _cudart()
        ptr, have = self.device.get(name, (0, 0))
        if have < nbytes:
            if ptr:
                cudart.cudaFree(ptr)
            ptr = int(cuda_check(cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self.device[name] = (ptr, nbytes)
            if name in self.host:
                self.host.pop(name).free()
        if name not in self.host:
            self.host[name] = _HostBuffer(nbytes)
        return ptr, self.host[name]

    def close(self) -> None:
        cudart = _cudart()
        cudart.cudaStreamSynchronize(self.stream)
        for ptr, _ in self.device.values():
            cudart.cudaFree(ptr)
        for buf in self.host.values():
            buf.free()
        cudart.cudaStreamDestroy(self.stream)
        self.device, self.host = {}, {}


class TensorRTBackend(Backend):
    """A pool of execution contexts over one plan."""

    name = "tensorrt"

    def __init__(self, plan_path: str | Path, record: "Engine", *, device: int = 0, contexts: int = 2):
        import tensorrt as trt

        self._trt = trt
        self.device = device
        plan_path = Path(plan_path)
        local = local_environment(device)
        check_engine_compat(record, local, plan_path.parent)
        cudart = _cudart()
        cuda_check(cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if record.version_compatible:
            self._runtime.engine_host_code_allowed = True  # the plan embeds its lean runtime
        self.engine = self._runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT {trt.__version__} could not deserialize {plan_path.name}; rebuild it on this "
                               "machine with `ijepa-export build-engine`")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BackendError(f"{plan_path.name} has {len(inputs)} inputs; an I-JEPA plan has one")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.output_shapes = {n: tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(n))
                              for n in self.output_names}
        self.min_shape, _, self.max_shape = (tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
        self._slots: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        self._all: list[_Slot] = []
        for _ in range(max(1, contexts)):
            slot = _Slot(self.engine)
            self._all.append(slot)
            self._slots.put(slot)
        self._closed = False
        self._close_lock = threading.Lock()

    def run(self, pixel_values: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        if self._closed:
            raise BackendError("this TensorRT backend is closed")
        shape = tuple(pixel_values.shape)
        if len(shape) != len(self.min_shape):
            raise BackendError(f"input has shape {shape}; the plan takes rank-{len(self.min_shape)} input {self.min_shape}")
        if any(s < lo or s > hi for s, lo, hi in zip(shape, self.min_shape, self.max_shape)):
            raise BackendError(f"input shape {shape} is outside the engine profile {self.min_shape}..{self.max_shape}; "
                               "rebuild with wider --min/--max-batch or --min/--max-resolution")
        names = outputs or self.output_names
        unknown = [n for n in names if n not in self.output_names]
        if unknown:
            raise BackendError(f"the plan has no output {unknown[0]!r} (has {self.output_names})")
        cudart = _cudart()
        cuda_check(cudart.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")  # per thread
        slot = self._slots.get()
        try:
            ctx = slot.context
            if not ctx.set_input_shape(self.input_name, shape):
                raise BackendError(f"TensorRT refused input shape {shape}")
            shapes = {n: tuple(ctx.get_tensor_shape(n)) for n in [self.input_name, *self.output_names]}
            if any(d < 0 for s in shapes.values() for d in s):
                raise BackendError(f"TensorRT could not infer every output shape for input {shape}: {shapes}")
            staged = {}
            for n, s in shapes.items():
                nbytes = int(np.prod(s)) * self.dtypes[n].itemsize
                ptr, host = slot.buffers(n, max(nbytes, 1))
                if not ctx.set_tensor_address(n, ptr):
                    raise BackendError(f"TensorRT refused the address of {n}")
                staged[n] = (ptr, host, nbytes)
            ptr, host, nbytes = staged[self.input_name]
            host.view(self.dtypes[self.input_name], shape)[...] = pixel_values
            h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            cuda_check(cudart.cudaMemcpyAsync(ptr, host.ptr, nbytes, h2d, slot.stream), "cudaMemcpyAsync H2D")
            if not ctx.execute_async_v3(slot.stream):
                raise BackendError("TensorRT execution failed (see the TensorRT log)")
            for n in names:
                ptr, host, nbytes = staged[n]
                cuda_check(cudart.cudaMemcpyAsync(host.ptr, ptr, nbytes, d2h, slot.stream), "cudaMemcpyAsync D2H")
            cuda_check(cudart.cudaStreamSynchronize(slot.stream), "cudaStreamSynchronize")
            return {n: staged[n][1].view(self.dtypes[n], shapes[n]).astype(np.float32, copy=True) for n in names}
        finally:
            self._slots.put(slot)

    def close(self) -> None:
        with self._close_lock:
            if self._closed or not hasattr(self, "_all"):
                return
            self._closed = True
        _cudart().cudaSetDevice(self.device)
        for _ in self._all:  # wait for calls in flight to hand their context back
            self._slots.get().close()
        self._all = []

    def describe(self) -> str:
        return f"tensorrt ({self._trt.__version__}, {len(self._all)} contexts)"
