"""Stand-ins for `tensorrt` and `cuda.bindings.runtime`, so the backend's own logic (one context per
profile, bucket choice, padding and splitting, CUDA-graph capture and replay, refit of stripped
plans, close while calls are in flight) and the builder's flag handling run without a GPU.

They mimic only the calls our code makes, with the names checked against the real bindings by
test_tensorrt_api. Host and "device" memory are both ordinary ctypes buffers; a "kernel" is a
Python closure that runs at once, or is recorded while its stream is being captured and runs
when the graph is launched. The fake engine's outputs are simple functions of the input (each
image's token means and its mean), so padded rows and split batches are visible in the results.
"""

from __future__ import annotations

import ctypes
import json
import types
from dataclasses import dataclass, field

import numpy as np

PATCH, HIDDEN = 14, 8


class FakeCudart(types.ModuleType):
    cudaStreamNonBlocking = 1

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self):
        super().__init__("cuda.bindings.runtime")
        self.buffers: dict[int, ctypes.Array] = {}
        self.capturing: dict[int, list] = {}
        self.calls: list[str] = []
        self.streams = 0
        self.fail_capture = False

    def _alloc(self, n):
        buf = ctypes.create_string_buffer(int(n))
        self.buffers[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    cudaMalloc = cudaMallocHost = _alloc

    def cudaFree(self, ptr):
        self.buffers.pop(int(ptr), None)
        return (0,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        self.submit(stream, lambda: ctypes.memmove(int(dst), int(src), int(n)))
        return (0,)

    def submit(self, stream, op) -> None:
        """Run `op` now, or record it when `stream` is being captured."""
        if stream in self.capturing:
            self.capturing[stream].append(op)
        else:
            op()

    def cudaStreamCreateWithFlags(self, flags):
        self.streams += 1
        return 0, 1000 + self.streams

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        self.calls.append("cudaStreamDestroy")
        return (0,)

    def cudaSetDevice(self, device):
        return (0,)

    def cudaGetDeviceCount(self):
        return 0, 1

    def cudaGetDeviceProperties(self, device):
        return 0, types.SimpleNamespace(name=b"NVIDIA Fake GPU", major=9, minor=0)

    def cudaGetErrorName(self, err):
        return 0, b"cudaErrorFake"

    def cudaGetLastError(self):
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing[stream] = []
        self.calls.append("capture")
        return (0,)

    def cudaStreamEndCapture(self, stream):
        ops = self.capturing.pop(stream)
        return (1, 0) if self.fail_capture else (0, FakeHandle(ops))

    def cudaGraphInstantiate(self, graph, flags):
        return 0, FakeHandle(list(graph.ops))

    def cudaGraphLaunch(self, graph_exec, stream):
        self.calls.append("launch")
        for op in graph_exec.ops:
            op()
        return (0,)

    def cudaGraphDestroy(self, graph):
        return (0,)

    def cudaGraphExecDestroy(self, graph_exec):
        self.calls.append("destroy")
        return (0,)


@dataclass
class FakeHandle:
    ops: list

    def __int__(self):
        return id(self)


def plan_bytes(profiles: list[tuple[tuple, tuple, tuple]], hardware: str = "NONE") -> bytes:
    """A fake plan: its optimization profiles (min, opt, max input shapes)."""
    return json.dumps({"profiles": profiles, "hardware": hardware}).encode()


def make_tensorrt(cudart: FakeCudart, version: str = "10.3.0.26"):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32 = "float32"
    trt.nptype = lambda dtype: np.float32
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.HardwareCompatibilityLevel = types.SimpleNamespace(NONE="NONE", AMPERE_PLUS="AMPERE_PLUS")
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(STATIC="STATIC", ON_PROFILE_CHANGE="ON_PROFILE_CHANGE")
    trt.refits = []

    class Logger:
        WARNING = 2

        def __init__(self, severity=None):
            pass

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            return FakeEngine(json.loads(data), cudart)

    class Refitter:
        def __init__(self, engine, logger):
            self.engine = engine

        def refit_cuda_engine(self):
            self.engine.refitted = True
            return True

    class OnnxParserRefitter:
        num_errors = 0

        def __init__(self, refitter, logger):
            self.refitter = refitter

        def refit_from_file(self, path):
            trt.refits.append(path)
            return True

    trt.Logger, trt.Runtime, trt.Refitter, trt.OnnxParserRefitter = Logger, Runtime, Refitter, OnnxParserRefitter
    _builder_api(trt)
    return trt


def _builder_api(trt) -> None:
    """Builder, parser and config stand-ins: the config records what was asked of it and the built
    "plan" is the JSON of its profiles (deserializable by the fake runtime)."""
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32", VERSION_COMPATIBLE="VERSION_COMPATIBLE",
                                            STRIP_PLAN="STRIP_PLAN", REFIT_IDENTICAL="REFIT_IDENTICAL")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED="DETAILED")
    trt.LayerInformationFormat = types.SimpleNamespace(JSON="JSON")
    trt.configs, trt.inspector_json = [], {"Layers": []}
    trt.ILogger, trt.Builder, trt.OnnxParser = FakeILogger, FakeBuilder, FakeOnnxParser


class FakeILogger:
    Severity = types.SimpleNamespace(ERROR=1, WARNING=2)

    def __init__(self):
        pass


class FakeProfile:
    def __init__(self):
        self.shapes = None

    def set_shape(self, name, lo, opt, hi):
        self.shapes = (tuple(lo), tuple(opt), tuple(hi))


class FakeConfig:
    def __init__(self):
        self.flags, self.cleared, self.profiles = {"TF32"}, set(), []  # TF32 is on by default
        self.hardware_compatibility_level = "NONE"
        __import__("sys").modules["tensorrt"].configs.append(self)

    def set_memory_pool_limit(self, pool, size):
        self.workspace = size

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)
        self.cleared.add(flag)

    def create_timing_cache(self, data):
        return types.SimpleNamespace(serialize=lambda: b"timing cache")

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache

    def add_optimization_profile(self, profile):
        self.profiles.append(profile.shapes)


class FakeBuilder:
    def __init__(self, logger):
        pass

    def create_network(self, flags):
        return types.SimpleNamespace(flags=flags)

    def create_builder_config(self):
        return FakeConfig()

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        return plan_bytes(config.profiles, config.hardware_compatibility_level)


class FakeOnnxParser:
    num_errors = 0

    def __init__(self, network, logger):
        pass

    def parse_from_file(self, path):
        return True


class FakeEngine:
    names = ["pixel_values", "last_hidden_state", "embedding"]

    def __init__(self, spec: dict, cudart: FakeCudart):
        self.profiles = [tuple(tuple(s) for s in p) for p in spec["profiles"]]
        self.hardware_compatibility_level = spec.get("hardware", "NONE")
        self.num_io_tensors = len(self.names)
        self.num_optimization_profiles = len(self.profiles)
        self.cudart, self.contexts, self.refitted = cudart, [], False
        self.num_layers = 3

    def create_engine_inspector(self):
        trt = __import__("sys").modules["tensorrt"]
        text = trt.inspector_json if isinstance(trt.inspector_json, str) else json.dumps(trt.inspector_json)
        return types.SimpleNamespace(get_engine_information=lambda fmt: text)  # a str: the text as it is

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "INPUT" if name == "pixel_values" else "OUTPUT"

    def get_tensor_dtype(self, name):
        return "float32"

    def get_tensor_shape(self, name):
        return {"pixel_values": (-1, 3, -1, -1), "last_hidden_state": (-1, -1, HIDDEN), "embedding": (-1, HIDDEN)}[name]

    def get_tensor_profile_shape(self, name, index):
        return self.profiles[index]

    def create_execution_context(self, strategy="STATIC"):
        ctx = FakeContext(self, strategy=strategy)
        self.contexts.append(ctx)
        return ctx


@dataclass
class FakeContext:
    engine: FakeEngine
    strategy: str = "STATIC"
    profile: int = 0
    shape: tuple | None = None
    addresses: dict = field(default_factory=dict)
    runs: list = field(default_factory=list)  # (profile, input shape) per kernel run

    def set_optimization_profile_async(self, index, stream):
        self.profile = index
        return True

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.profiles[self.profile]
        if not all(a <= s <= b for s, a, b in zip(shape, lo, hi)):
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        n, _, h, w = self.shape
        return {"pixel_values": self.shape, "last_hidden_state": (n, (h // PATCH) * (w // PATCH), HIDDEN),
                "embedding": (n, HIDDEN)}[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def _view(self, name):
        shape = self.get_tensor_shape(name)
        buf = (ctypes.c_float * int(np.prod(shape))).from_address(self.addresses[name])
        return np.frombuffer(buf, dtype=np.float32).reshape(shape)

    def _kernel(self, shape, addresses):
        saved = self.shape, self.addresses
        self.shape, self.addresses = shape, addresses  # a graph replays what was captured
        try:
            x = self._view("pixel_values")
            n, _, h, w = x.shape
            tokens = x.reshape(n, 3, h // PATCH, PATCH, w // PATCH, PATCH).mean(axis=(1, 3, 5)).reshape(n, -1)
            self._view("last_hidden_state")[...] = tokens[:, :, None] + np.arange(HIDDEN, dtype=np.float32)
            self._view("embedding")[...] = self._view("last_hidden_state").mean(axis=1)
            self.runs.append((self.profile, shape))
        finally:
            self.shape, self.addresses = saved

    def execute_async_v3(self, stream):
        shape, addresses = self.shape, dict(self.addresses)
        self.engine.cudart.submit(stream, lambda: self._kernel(shape, addresses))
        return True


def expected(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """What the fake engine computes for `pixels`."""
    n, _, h, w = pixels.shape
    tokens = pixels.reshape(n, 3, h // PATCH, PATCH, w // PATCH, PATCH).mean(axis=(1, 3, 5)).reshape(n, -1)
    hidden = tokens[:, :, None] + np.arange(HIDDEN, dtype=np.float32)
    return {"last_hidden_state": hidden, "embedding": hidden.mean(axis=1)}


def install(monkeypatch, version: str = "10.3.0.26"):
    """Put the stand-ins where `import tensorrt` and `from cuda.bindings import runtime` find them."""
    import sys

    cudart = FakeCudart()
    trt = make_tensorrt(cudart, version)
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, cudart
    for name, module in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", cudart)):
        monkeypatch.setitem(sys.modules, name, module)
    return trt, cudart
