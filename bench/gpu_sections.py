"""The measurements of the GPU check (bench/gpu_check.py), one function per section. Each returns a
JSON-able dict; a section that cannot run says why under "skipped" instead of failing the check."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)
BATCHES = (1, 8, 64)
HALF_GATE, FP32_GATE = 0.999, 0.99999  # centered cosine the exported artifacts are gated at


def images_per_second(seconds: list[float], batch: int) -> float:
    """Median throughput of timed runs of one batch."""
    ordered = sorted(seconds)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return batch / median if median > 0 else float("nan")


def parity_verdict(precision: str, metrics: dict) -> str:
    """pass/fail against the gate our artifacts of that precision meet (informational here)."""
    bound = FP32_GATE if precision == "fp32" else HALF_GATE
    return "pass" if metrics.get("centered_cosine", float("nan")) >= bound else f"below {bound}"


def _images(n: int, size: int) -> tuple[np.ndarray, str]:
    """Real photographs (scikit-image's, preprocessed as the manifest does) when available, else
    smooth deterministic patterns; normalized to [-1, 1], NCHW float32."""
    try:
        from PIL import Image
        import skimage

        folder = Path(skimage.__file__).parent / "data"
        files = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))[:n]
        if len(files) == n:
            arrays = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
                      for f in files]
            return (np.stack(arrays).transpose(0, 3, 1, 2) / 127.5 - 1).astype(np.float32), "photographs"
    except Exception:  # no PIL / scikit-image on this machine
        pass
    y, x = np.mgrid[0:size, 0:size] / size
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        f = rng.uniform(1, 6, (3, 2))
        p = rng.uniform(0, 2 * np.pi, 3)
        out.append(np.stack([np.sin(2 * np.pi * (f[c, 0] * x + f[c, 1] * y) + p[c]) for c in range(3)]))
    return np.stack(out).astype(np.float32), "synthetic patterns (no scikit-image here)"


def _outputs(model, pixels, device: str, dtype, batch: int = 8) -> dict[str, np.ndarray]:
    import torch

    got = {"embedding": [], "last_hidden_state": []}
    with torch.inference_mode():
        for i in range(0, len(pixels), batch):
            out = model(torch.from_numpy(pixels[i:i + batch]).to(device, dtype))
            got["embedding"].append(out.embedding.float().cpu().numpy())
            got["last_hidden_state"].append(out.last_hidden_state.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in got.items()}


def parity(variant: str, images: int, left: Callable[[], float], device: str = "cuda") -> dict:
    """The reference model on CUDA (fp32 with TF32 off and on, fp16, bf16) vs itself on the CPU in fp32
    (`device` "cpu": a dry run of this code, for the tests)."""
    import torch

    from ijepa_deploy.reference_model.checkpoint import load_checkpoint
    from ijepa_deploy.runtime.similarity import compare

    loaded = load_checkpoint(variant=variant, random_init=True, seed=0)
    size = loaded.architecture.image_size
    pixels, source = _images(images, size)
    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    reference = _outputs(loaded.model, pixels, "cpu", torch.float32)
    rows, skipped = [], []
    log.info("parity: CPU fp32 reference in %.1f s", time.perf_counter() - t)
    for name, dtype, tf32 in (("fp32", torch.float32, False), ("fp32+tf32", torch.float32, True),
                              ("fp16", torch.float16, False), ("bf16", torch.bfloat16, False)):
        if left() < 60:
            skipped.append(f"parity {name}: not enough time left")
            continue
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        model = copy.deepcopy(loaded.model).to(device, dtype)
        metrics = compare(_outputs(model, pixels, device, dtype), reference)
        del model
        _empty_cache(device)
        rows.append({"precision": name, **metrics,
                     "verdict": parity_verdict("fp32" if name == "fp32" else "half", metrics)})
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return {"model": f"{variant} (random init, seed 0)", "images": len(pixels), "inputs": source, "rows": rows,
            "skipped": skipped}


def _transformers_model(arch):
    from transformers import IJepaConfig, IJepaModel

    config = IJepaConfig(hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
                         num_attention_heads=arch.num_heads, intermediate_size=arch.mlp_size,
                         image_size=arch.image_size, patch_size=arch.patch_size, layer_norm_eps=arch.layer_norm_eps)
    return IJepaModel(config, add_pooling_layer=False) if "add_pooling_layer" in IJepaModel.__init__.__code__.co_varnames \
        else IJepaModel(config)


def _empty_cache(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()


def _runners(variant: str, device: str) -> tuple[list[tuple[str, object, object]], list[str], object]:
    """(name, model on CUDA, dtype) for every path measured, and what could not be built."""
    import torch

    from ijepa_deploy.reference_model.checkpoint import load_checkpoint

    loaded = load_checkpoint(variant=variant, random_init=True, seed=0)
    runners, skipped = [], []
    try:
        hf = _transformers_model(loaded.architecture)
        hf.config._attn_implementation = "sdpa"
        for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            runners.append((f"transformers {name} (SDPA)", copy.deepcopy(hf).to(device, dtype).eval(), dtype))
        del hf
    except Exception as exc:  # transformers missing or too old on this machine
        skipped.append(f"transformers baselines: {type(exc).__name__}: {str(exc)[:150]}")
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        runners.append((f"reference model {name}", copy.deepcopy(loaded.model).to(device, dtype).eval(), dtype))
    return runners, skipped, loaded.architecture


def baselines(variant: str, left: Callable[[], float], device: str = "cuda", rounds: int = 3,
              per_round: float = 0.6, batches: tuple[int, ...] = BATCHES) -> dict:
    """images/s of each path at batch 1/8/64, interleaved: A B C A B C ..., median per path."""
    import torch

    runners, skipped, arch = _runners(variant, device)
    size = arch.image_size
    times: dict[tuple[str, int], list[float]] = {}
    with torch.inference_mode():
        for batch in batches:
            x = {dtype: torch.randn(batch, 3, size, size, device=device, dtype=dtype) for _, _, dtype in runners}
            for name, model, dtype in runners:  # warm-up (kernels, autotuning)
                for _ in range(3):
                    model(x[dtype])
            for _ in range(rounds):
                for name, model, dtype in runners:
                    if left() < 45:
                        skipped.append(f"throughput {name} batch {batch}: not enough time left")
                        continue
                    times.setdefault((name, batch), []).extend(_time(model, x[dtype], per_round, device))
    rows = [{"path": name, "batch": batch, "images_per_s": images_per_second(t, batch),
             "ms": 1000 * batch / images_per_second(t, batch)} for (name, batch), t in times.items()]
    del runners
    _empty_cache(device)
    return {"model": f"{variant} (random init)", "resolution": size, "rounds": rounds, "rows": rows,
            "skipped": sorted(set(skipped))}


def _time(model, x, seconds: float, device: str) -> list[float]:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(out) < 3:
        sync()
        t = time.perf_counter()
        model(x)
        sync()
        out.append(time.perf_counter() - t)
    return out


def cuda_python() -> dict:
    """Our backend's cuda-python half on this GPU: stream, pinned buffers, copies, graph capture."""
    try:
        from ijepa_deploy.runtime.backends.tensorrt_cuda import CudaGraph, DeviceBuffers, cuda_check, cudart
        rt = cudart()
    except ImportError as exc:
        return {"skipped": [f"cuda-python: not importable ({exc})"]}
    checks = {}
    io = DeviceBuffers()
    try:
        data = np.random.default_rng(0).integers(0, 255, 64 << 20, dtype=np.uint8)
        t = time.perf_counter()
        io.to_device("x", data)
        io.from_device("x", data.nbytes)
        io.synchronize()
        seconds = time.perf_counter() - t
        checks["pinned H2D + D2H 64 MiB: bytes equal"] = bool(np.array_equal(io.read("x", np.uint8, data.shape), data))
        checks["pinned H2D + D2H GB/s"] = round(2 * data.nbytes / seconds / 1e9, 1)
        checks.update(_graph_checks(rt, io, data.nbytes, cuda_check, CudaGraph))
        try:
            cuda_check(rt.cudaSetDevice(10_000), "cudaSetDevice(10000)")
            checks["errors carry their CUDA name"] = False
        except Exception as exc:
            checks["errors carry their CUDA name"] = "cudaErrorInvalidDevice" in str(exc)
    finally:
        io.close()
    return {"checks": checks}


def _graph_checks(rt, io, nbytes: int, cuda_check, CudaGraph) -> dict:
    """Capture a device-to-device copy into a graph, replay it, and check a failed capture leaves
    no graph and no sticky error."""
    src, _ = io.buffers("x", nbytes)
    dst, _ = io.buffers("y", nbytes)
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    graph = CudaGraph()
    captured = graph.capture(io.stream, lambda s: int(rt.cudaMemcpyAsync(dst, src, nbytes, kind, s)[0]) == 0)
    checks = {"graph captured": captured}
    if captured:
        for _ in range(3):
            graph.launch(io.stream)
        io.from_device("y", nbytes)
        io.synchronize()
        checks["graph replay: bytes equal"] = bool(np.array_equal(io.read("y", np.uint8, (nbytes,)),
                                                                  io.read("x", np.uint8, (nbytes,))))
        graph.destroy()
    failed = CudaGraph()
    checks["failed capture leaves no graph"] = not failed.capture(io.stream, lambda s: False) and failed.exec is None
    checks["no sticky error after it"] = int(rt.cudaGetLastError()[0]) == 0
    io.synchronize()
    return checks


def tensorrt(root: Path, left: Callable[[], float]) -> dict:
    """The TensorRT GPU tests, where TensorRT imports; otherwise say why they did not run."""
    from ijepa_deploy.runtime.backends.tensorrt_backend import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        return {"summary": f"not run: {reason}", "skipped": [f"TensorRT steps: {reason}"]}
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"summary": "not run: pytest is missing", "skipped": ["TensorRT steps: pytest is missing"]}
    cmd = [sys.executable, "-m", "pytest", "-q", "-ra", "-m", "gpu", str(root / "tests" / "test_tensorrt_cli.py")]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=max(left() - 20, 30))
    except subprocess.TimeoutExpired:
        return {"summary": "the TensorRT GPU tests ran out of time", "skipped": ["TensorRT steps: timed out"]}
    tail = (out.stdout + out.stderr).strip().splitlines()[-15:]
    return {"summary": f"pytest -m gpu: exit {out.returncode}; {tail[-1] if tail else ''}", "output": tail}
