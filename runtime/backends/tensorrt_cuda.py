"""The cuda-python half of the TensorRT backend, usable (and checked on a GPU) without TensorRT:
a non-blocking stream with named device buffers and pinned host buffers grown on demand, host <->
device copies, and CUDA-graph capture / replay of whatever an `enqueue(stream)` callable issues.

Follows trtexec's TrtCudaGraph (samples/common/sampleDevice.h): capture in thread-local mode, and
on a failed capture end it, destroy what was captured and clear the sticky CUDA error.
"""

from __future__ import annotations

import ctypes

import numpy as np

from .base import BackendError


def cudart():
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # older cuda-python layout
    return runtime


def cuda_check(result, what: str = "CUDA call"):
    """cuda-python returns (error, *values): raise with the error's name, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        try:
            name = cudart().cudaGetErrorName(err)[1].decode()
        except Exception:
            name = str(err)
        raise BackendError(f"{what} failed: {name} ({int(err)})")
    return values[0] if len(values) == 1 else values if values else None


class HostBuffer:
    """Pinned host memory viewed as numpy."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.ptr = cuda_check(cudart().cudaMallocHost(nbytes), "cudaMallocHost")

    def view(self, dtype, shape) -> np.ndarray:
        count = int(np.prod(shape))
        buf = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(int(self.ptr))
        return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)

    def free(self) -> None:
        cudart().cudaFreeHost(self.ptr)


class DeviceBuffers:
    """One non-blocking stream and, per tensor name, a device buffer and a pinned host buffer of
    the same size (grown, never shrunk: addresses change only when a larger batch arrives)."""

    def __init__(self):
        rt = cudart()
        self.stream = cuda_check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self.device: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)
        self.host: dict[str, HostBuffer] = {}

    def buffers(self, name: str, nbytes: int) -> tuple[int, HostBuffer]:
        rt = cudart()
        nbytes = max(int(nbytes), 1)
        ptr, have = self.device.get(name, (0, 0))
        if have < nbytes:
            if ptr:
                rt.cudaFree(ptr)
            ptr = int(cuda_check(rt.cudaMalloc(nbytes), "cudaMalloc"))
            self.device[name] = (ptr, nbytes)
            if name in self.host:
                self.host.pop(name).free()
        if name not in self.host:
            self.host[name] = HostBuffer(nbytes)
        return ptr, self.host[name]

    def to_device(self, name: str, array: np.ndarray) -> int:
        """Stage `array` in the pinned buffer and copy it to the device (async on the stream)."""
        ptr, host = self.buffers(name, array.nbytes)
        host.view(array.dtype, array.shape)[...] = array
        kind = cudart().cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_check(cudart().cudaMemcpyAsync(ptr, host.ptr, array.nbytes, kind, self.stream), f"cudaMemcpyAsync {name}")
        return ptr

    def from_device(self, name: str, nbytes: int) -> None:
        ptr, host = self.device[name][0], self.host[name]
        kind = cudart().cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_check(cudart().cudaMemcpyAsync(host.ptr, ptr, nbytes, kind, self.stream), f"cudaMemcpyAsync {name}")

    def read(self, name: str, dtype, shape) -> np.ndarray:
        """A copy of the pinned buffer (call after `synchronize`)."""
        return self.host[name].view(dtype, shape).copy()

    def synchronize(self) -> None:
        cuda_check(cudart().cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        rt = cudart()
        rt.cudaStreamSynchronize(self.stream)
        for ptr, _ in self.device.values():
            rt.cudaFree(ptr)
        for buf in self.host.values():
            buf.free()
        rt.cudaStreamDestroy(self.stream)
        self.device, self.host = {}, {}


class CudaGraph:
    """At most one instantiated graph, captured from `enqueue(stream)`."""

    def __init__(self):
        self.exec = None

    def capture(self, stream, enqueue) -> bool:
        """Capture what `enqueue(stream)` issues (it returns False on failure); True when a graph
        is ready. A failed capture leaves no graph and no sticky CUDA error."""
        rt = cudart()
        self.destroy()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_check(rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        ok = bool(enqueue(stream))
        err, graph = rt.cudaStreamEndCapture(stream)
        valid = graph is not None and int(graph) != 0
        try:
            if ok and int(err) == 0 and valid:
                err, graph_exec = rt.cudaGraphInstantiate(graph, 0)
                if int(err) == 0:
                    self.exec = graph_exec
            return self.exec is not None
        finally:
            if valid:
                rt.cudaGraphDestroy(graph)  # the instantiated graph does not need it
            if self.exec is None:
                rt.cudaGetLastError()  # clear what the failed capture left

    def launch(self, stream) -> None:
        cuda_check(cudart().cudaGraphLaunch(self.exec, stream), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self.exec is not None:
            cudart().cudaGraphExecDestroy(self.exec)
            self.exec = None
