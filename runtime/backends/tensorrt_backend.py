"""TensorRT backend: runs a plan recorded in the manifest, behind the same interface as every backend.

One execution context per optimization profile (TensorRT's contract: contexts in concurrent use
need separate profiles), each with its own non-blocking CUDA stream and its own device and pinned
host buffers; a batch goes to the tightest free profile that holds it (padded up to a profile's
minimum, split above the largest maximum). Name-based I/O (TensorRT 10/11: set_input_shape,
set_tensor_address, execute_async_v3) with every result checked and every I/O dtype read from
the engine. With `cuda_graphs`, each context captures a CUDA graph for its current shape after a
warm-up run and replays it, re-capturing after a shape change (tensorrt_profiles.GraphState).
Weight-stripped plans are refitted from the artifact's ONNX (checked against the manifest) at load.
The CUDA device is set on every call (it is per thread); `close()` waits for calls in flight and
refuses new ones. Plans are checked against this machine before deserialization.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .base import Backend, BackendError
from .tensorrt_compat import (check_engine_compat, cpu_arch, engine_compat_problem,  # noqa: F401 (re-exported)
                              rank_usable)
from .tensorrt_cuda import CudaGraph, DeviceBuffers, cuda_check
from .tensorrt_cuda import cudart as _cudart
from .tensorrt_profiles import (CAPTURE, EXECUTE, REPLAY, GraphState, PoolClosed, ProfileRange, SlotPool,
                                choose_profiles, split_batch)

if TYPE_CHECKING:
    from ijepa_deploy.contract.manifest import Engine, Manifest

log = logging.getLogger(__name__)


def install_hint(cuda_major: int | None = None) -> str:
    if cuda_major in (12, 13):
        return f"pip install 'ijepa-deploy[tensorrt-cu{cuda_major}]' on the GPU machine"
    return "pip install 'ijepa-deploy[tensorrt-cu12]', or [tensorrt-cu13] for a CUDA 13 driver, on the GPU machine"


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
    """TensorRT version, GPU name, compute capability of `device` and CPU architecture here."""
    import tensorrt as trt

    cudart = _cudart()
    count = cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if not 0 <= device < count:
        raise BackendError(f"CUDA device {device} does not exist ({count} visible)")
    props = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"tensorrt_version": trt.__version__, "gpu_name": name.strip("\x00 "),
            "compute_capability": f"{props.major}.{props.minor}", "cpu_arch": cpu_arch()}


def hardware_level_name(trt, engine) -> str | None:
    """The plan's hardware-compatibility level as the manifest spells it (None: this GPU only)."""
    level = engine.hardware_compatibility_level
    if level == trt.HardwareCompatibilityLevel.AMPERE_PLUS:
        return "ampere_plus"
    name = str(getattr(level, "name", level)).split(".")[-1].lower()
    return None if name == "none" else name


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
    usable = rank_usable(engines, local)
    if usable:
        return usable[0], ""
    problems = "; ".join(engine_compat_problem(e, local) for e in engines)
    return None, f"{problems}; rebuild with `ijepa-export build-engine --artifacts {folder} --precision {precision}`"


class Slot:
    """One execution context bound to one optimization profile, with its own stream, buffers and
    (with CUDA graphs) its own graph: never shared with another context."""

    def __init__(self, engine, profile: int, backend: "TensorRTBackend"):
        self.backend = backend
        trt = backend._trt
        # A context that never leaves its profile needs the activation memory of that profile only
        # (STATIC, the default, sizes every context for the largest profile).
        strategy = trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE if engine.num_optimization_profiles > 1 \
            else trt.ExecutionContextAllocationStrategy.STATIC
        self.context = engine.create_execution_context(strategy)
        if self.context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
        self.io = DeviceBuffers()
        self.graph, self.state = CudaGraph(), GraphState()
        self.bound: tuple | None = None  # (input shape, tensor shapes, buffer addresses) set on the context
        if profile != 0:  # a new context starts on profile 0
            if not self.context.set_optimization_profile_async(profile, self.io.stream):
                raise BackendError(f"TensorRT refused optimization profile {profile}")
            self.io.synchronize()

    def _bind(self, shape: tuple) -> None:
        b, ctx = self.backend, self.context
        if not ctx.set_input_shape(b.input_name, shape):
            raise BackendError(f"TensorRT refused input shape {shape}")
        shapes = {n: tuple(ctx.get_tensor_shape(n)) for n in [b.input_name, *b.output_names]}
        if any(d < 0 for s in shapes.values() for d in s):
            raise BackendError(f"TensorRT could not infer every output shape for input {shape}: {shapes}")
        ptrs = []
        for n, s in shapes.items():
            ptr, _ = self.io.buffers(n, int(np.prod(s)) * b.dtypes[n].itemsize)
            if not ctx.set_tensor_address(n, ptr):
                raise BackendError(f"TensorRT refused the address of {n}")
            ptrs.append(ptr)
        self.bound = (shape, shapes, tuple(ptrs))

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.io.stream):
            raise BackendError("TensorRT execution failed (see the TensorRT log)")

    def execute(self, pixels: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """One batch on this context: plain, captured into a graph, or replayed from it."""
        b = self.backend
        shape = tuple(pixels.shape)
        if self.bound is None or self.bound[0] != shape:
            self._bind(shape)
        _, shapes, ptrs = self.bound
        self.io.to_device(b.input_name, np.ascontiguousarray(pixels, dtype=b.dtypes[b.input_name]))
        key = (shape, ptrs)
        action = self.state.decide(key) if b.cuda_graphs else EXECUTE
        if self.state.stale_graph(key):
            self.graph.destroy()  # the context runs another shape: its graph is no longer valid
        ok = True
        if action == REPLAY:
            self.graph.launch(self.io.stream)
        elif action == CAPTURE and (ok := self.graph.capture(self.io.stream, self.context.execute_async_v3)):
            self.graph.launch(self.io.stream)
        else:
            if action == CAPTURE:
                log.warning("CUDA graph capture failed for shape %s; running without a graph", shape)
            self._enqueue()
        self.state.ran(key, action, ok)
        for n in names:
            self.io.from_device(n, int(np.prod(shapes[n])) * b.dtypes[n].itemsize)
        self.io.synchronize()
        return {n: self.io.read(n, b.dtypes[n], shapes[n]).astype(np.float32, copy=False) for n in names}

    def close(self) -> None:
        self.graph.destroy()
        self.io.close()
        self.context = None


def deserialize_plan(trt, logger, data: bytes, version_compatible: bool, what: str, advice: str):
    """(runtime, engine) for plan bytes (the runtime must outlive the engine); BackendError naming `what`
    and `advice` when TensorRT cannot."""
    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True  # the plan embeds its lean runtime
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise BackendError(f"TensorRT {trt.__version__} cannot deserialize {what}: {advice}")
    return runtime, engine


def plan_profiles(engine, input_name: str) -> list[dict[str, tuple[int, ...]]]:
    """min/opt/max shapes of `input_name` in every optimization profile of a deserialized engine."""
    out = []
    for index in range(engine.num_optimization_profiles):
        lo, opt, hi = (tuple(s) for s in engine.get_tensor_profile_shape(input_name, index))
        out.append({"min": lo, "opt": opt, "max": hi})
    return out


class TensorRTBackend(Backend):
    """One execution context per optimization profile of one plan."""

    name = "tensorrt"

    def __init__(self, plan_path: str | Path, record: "Engine", *, device: int = 0, cuda_graphs: bool | None = None):
        """`cuda_graphs`: capture and replay CUDA graphs (None: on when $IJEPA_TENSORRT_CUDA_GRAPHS is 1)."""
        import tensorrt as trt

        if cuda_graphs is None:
            cuda_graphs = os.environ.get("IJEPA_TENSORRT_CUDA_GRAPHS", "") == "1"
        self._trt, self.device, self.cuda_graphs = trt, device, cuda_graphs
        plan_path = Path(plan_path)
        check_engine_compat(record, local_environment(device), plan_path.parent)
        cuda_check(_cudart().cudaSetDevice(device), f"cudaSetDevice({device})")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime, self.engine = deserialize_plan(trt, self._logger, plan_path.read_bytes(),
                                                      record.version_compatible, plan_path.name,
                                                      "rebuild it on this machine with `ijepa-export build-engine`")
        if getattr(record, "stripped", False):
            self._refit(plan_path, record)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BackendError(f"{plan_path.name} has {len(inputs)} inputs; an I-JEPA plan has one")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.output_shapes = {n: tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(n))
                              for n in self.output_names}
        self.ranges, self.opt_shapes = [], {}
        for index, shapes in enumerate(plan_profiles(self.engine, self.input_name)):
            self.ranges.append(ProfileRange(index, shapes["min"], shapes["max"]))
            self.opt_shapes[index] = shapes["opt"]
        self._largest = max(r.max[0] for r in self.ranges)
        slots: dict[int, list] = {}
        try:
            for r in self.ranges:
                slots[r.index] = [Slot(self.engine, r.index, self)]
        except BaseException:
            for group in slots.values():
                group[0].close()
            raise
        self._pool = SlotPool(slots)

    def _refit(self, plan_path: Path, record: "Engine") -> None:
        """Fill a weight-stripped plan with the weights of its artifact's ONNX (verified first)."""
        from ijepa_deploy.contract.manifest import Manifest

        trt = self._trt
        onnx_path = Manifest.load(plan_path.parent).verify(record.precision)
        refitter = trt.Refitter(self.engine, self._logger)
        parser = trt.OnnxParserRefitter(refitter, self._logger)
        if not parser.refit_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"cannot refit {plan_path.name} from {onnx_path.name}: {errors[:300] or 'see log'}")
        if not refitter.refit_cuda_engine():
            raise BackendError(f"TensorRT could not refit {plan_path.name} from {onnx_path.name}")
        log.info("refitted %s from %s", plan_path.name, onnx_path.name)

    def _check_input(self, shape: tuple) -> list[tuple[int, int]]:
        if len(shape) != len(self.ranges[0].min):
            raise BackendError(f"input has shape {shape}; the plan takes rank-{len(self.ranges[0].min)} input")
        choices = choose_profiles(self.ranges, (min(shape[0], self._largest), *shape[1:]))
        if not choices:
            spans = "; ".join(f"{r.min}..{r.max}" for r in self.ranges)
            raise BackendError(f"input shape {shape} is outside every engine profile ({spans}); rebuild with wider "
                               "--profiles or --min/--max-resolution")
        return choices

    def run(self, pixel_values: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        if self._pool.closed:
            raise BackendError("this TensorRT backend is closed")
        names = outputs or self.output_names
        unknown = [n for n in names if n not in self.output_names]
        if unknown:
            raise BackendError(f"the plan has no output {unknown[0]!r} (has {self.output_names})")
        shape = tuple(pixel_values.shape)
        choices = dict(self._check_input(shape))
        if shape[0] > self._largest:  # above every profile: in pieces
            parts = [self.run(pixel_values[a:b], names) for a, b in split_batch(shape[0], self._largest)]
            return {n: np.concatenate([p[n] for p in parts]) for n in names}
        cuda_check(_cudart().cudaSetDevice(self.device), f"cudaSetDevice({self.device})")  # per thread
        try:
            profile, slot = self._pool.acquire(list(choices))
        except PoolClosed:
            raise BackendError("this TensorRT backend is closed") from None
        try:
            return self._run_slot(slot, pixel_values, choices[profile], names)
        finally:
            self._pool.release(profile, slot)

    def _run_slot(self, slot: "Slot", pixels: np.ndarray, batch: int, names: list[str]) -> dict[str, np.ndarray]:
        n = len(pixels)
        if batch > n:  # below the profile's minimum: zero rows (every image is computed independently)
            pixels = np.concatenate([pixels, np.zeros((batch - n, *pixels.shape[1:]), pixels.dtype)])
        got = slot.execute(pixels, names)
        return {k: v[:n] for k, v in got.items()}

    def warmup(self, shapes: list[tuple[int, ...]] | None = None) -> int:
        """Run every profile's context once at each shape it holds (default: its opt shape), twice
        with CUDA graphs so the graph is captured; returns how many runs were made."""
        runs = 0
        cuda_check(_cudart().cudaSetDevice(self.device), f"cudaSetDevice({self.device})")
        for r in self.ranges:
            for shape in shapes or [self.opt_shapes[r.index]]:
                if not r.holds(tuple(shape)):
                    continue
                profile, slot = self._pool.acquire([r.index])
                try:
                    for _ in range(2 if self.cuda_graphs else 1):
                        slot.execute(np.zeros(shape, self.dtypes[self.input_name]), self.output_names)
                        runs += 1
                finally:
                    self._pool.release(profile, slot)
        return runs

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is None or pool.closed:
            return
        _cudart().cudaSetDevice(self.device)
        pool.close(lambda slot: slot.close())

    def describe(self) -> str:
        graphs = ", CUDA graphs" if self.cuda_graphs else ""
        return f"tensorrt ({self._trt.__version__}, {len(self.ranges)} profiles{graphs})"


__all__ = ["TensorRTBackend", "check_engine_compat", "engine_compat_problem", "select_engine",
           "local_environment", "tensorrt_unavailable_reason", "hardware_level_name", "cuda_check",
           "CAPTURE", "EXECUTE", "REPLAY", "GraphState"]
