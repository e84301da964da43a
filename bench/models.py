"""The model comparison: which paths run, interleaved timing of every path on the same photographs,
and the peak RSS of each path loaded alone in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.errors import UserError
from ijepa_deploy.contract.manifest import Manifest
from ijepa_deploy.contract.precisions import PRECISIONS
from ijepa_deploy.runtime.similarity import centered_cosine, cosine_rows

from . import runners as R
from .roofline import peak_for


class BenchError(UserError):
    """A benchmark step failed."""


def plan_specs(manifest: Manifest, backends: list[str], precisions: list[str], peers: bool) -> list[str]:
    """Which paths run: the baseline first, then peers, then ours."""
    from ijepa_deploy.runtime.backends.openvino_backend import cpu_has_bf16, openvino_unavailable_reason

    have_ov = openvino_unavailable_reason() is None
    specs = ["torch:transformers"]
    if peers:
        specs.append("torch:transformers-bf16")
        if have_ov:
            import openvino as ov

            default = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
            specs += ["openvino-peer:fp32:default", "openvino-peer:fp32:f32"]
            if cpu_has_bf16() and default != "bf16":  # where bf16 is the default, it is the default peer
                specs.append("openvino-peer:fp32:bf16")
            specs += [f"openvino-peer:{p}:default" for p in ("int8", "int8-cpu") if p in manifest.artifacts]
    for backend in backends:
        if backend == "openvino" and not have_ov:
            continue
        for precision in precisions:
            art = manifest.artifacts.get(precision)
            if art is None or (art.backends and backend not in art.backends):
                continue
            if backend == "tensorrt" and not manifest.engines_for(precision):
                continue
            if backend == "openvino" and not PRECISIONS[precision].openvino_fast:
                continue
            if backend == "onnxruntime" and precision != "fp32" and not art.cpu_only:
                continue  # the files for GPUs (fp16, int8, fp8) are not what anyone serves from a CPU
            specs.append(f"ours:{backend}:{precision}")
    return specs


def bench_models(runners: list[R.Runner], pixels_for, batch_sizes: list[int], warmup: int, iters: int,
                 gflop_per_image: float, peaks: dict | None, pause: float) -> tuple[list[dict], dict]:
    results, best_peer = [], {}
    for batch in batch_sizes:
        pixels = pixels_for(batch)
        outputs = {}
        for r in runners:
            for _ in range(warmup):
                outputs[r.name] = r.run(pixels)
        times: dict[str, list[float]] = {r.name: [] for r in runners}
        for _ in range(iters):  # interleaved: A B C A B C ...
            for r in runners:
                time.sleep(pause)  # untimed: lets the previous runner's worker threads park
                start = time.perf_counter()
                r.run(pixels)
                times[r.name].append(time.perf_counter() - start)
        ips = {r.name: batch / float(np.median(times[r.name])) for r in runners}
        base = next((r for r in runners if r.role == "baseline"), None)
        peers = [r for r in runners if r.role == "peer" and r.device == "cpu"]
        top_peer = max(peers, key=lambda r: ips[r.name]) if peers else None
        if top_peer:
            best_peer[str(batch)] = f"{top_peer.name} ({ips[top_peer.name]:.2f} images/s)"
        for r in runners:
            t = np.asarray(times[r.name])
            row = {"backend": r.name, "role": r.role, "precision": r.precision, "spec": r.spec, "device": r.device,
                   "batch": batch, "iters": iters, "images_per_s": round(ips[r.name], 3),
                   "latency_p50_ms": round(float(np.percentile(t, 50)) * 1e3, 1),
                   "latency_p95_ms": round(float(np.percentile(t, 95)) * 1e3, 1),
                   "ratio_vs_transformers": round(ips[r.name] / ips[base.name], 3) if base else None,
                   "ratio_vs_best_peer": (round(ips[r.name] / ips[top_peer.name], 3)
                                          if top_peer and r.device == "cpu" else None),
                   "achieved_gflops": round(ips[r.name] * gflop_per_image, 1)}
            if base is not None:
                ref, got = outputs[base.name], outputs[r.name]
                row["pooled_cosine_vs_baseline"] = round(float(cosine_rows(got, ref).min()), 6)
                if batch >= 4:  # a centered cosine needs a set: the batch's photos
                    row["centered_cosine_vs_baseline"] = round(float(centered_cosine(got, ref).min()), 5)
            peak = peak_for(r.precision, peaks) if r.device == "cpu" else None
            if peak:
                row["fraction_of_peak"] = round(ips[r.name] * gflop_per_image / peak, 4)
            results.append(row)
    return results, best_peer


def peak_memory(specs: list[str], folder: Path, weights: Path | None, batch: int, threads: int | None) -> dict:
    """Peak RSS (MB) of a fresh process that loads one path and runs one batch."""
    out = {}
    for spec in specs:
        cmd = [sys.executable, "-m", "ijepa_deploy.bench.probe", str(folder), spec, str(batch),
               str(weights) if weights else "", str(threads or "")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise BenchError(f"memory probe {spec} failed: {proc.stderr.strip()[-300:]}")
        out[spec] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    return out
