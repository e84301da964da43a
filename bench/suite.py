"""`ijepa-bench`'s library: our runtime against the baseline users run and the peers they could pick, in one run.

Every path runs the same preprocessed photographs; runs are interleaved (A B C A B C ...) with an
untimed pause so no path's worker threads spin into the next one's time, and medians are compared
within the run (this machine is shared: absolute figures drift, ratios in one run hold). Reported
per path and batch size: images/s, latency p50/p95, the ratio to the baseline (`transformers` as
`from_pretrained` gives it, SDPA, fp32) and to the best peer measured in the same run, the centered
cosine of its embeddings against the baseline's, the fraction of this machine's measured peak for
the precision it computes in, and the peak RSS of a fresh process that loads that path alone.
Also: preprocessing (ours vs ViTImageProcessor), the export itself, and collections (sharded output
vs in-memory embedding, with the sharded run's RSS over time).
"""

from __future__ import annotations

import datetime as _dt
import gc
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.manifest import Manifest
from ijepa_deploy.runtime.preprocessing import Preprocessor

from . import runners as R
from .extras import bench_collection, bench_export, bench_photos, bench_preprocessing
from .machine import machine
from .models import bench_models, peak_memory, plan_specs
from .roofline import matmul_peaks, peak_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    artifacts: Path
    backends: tuple[str, ...] = ("onnxruntime", "openvino")
    precisions: tuple[str, ...] = ("fp32", "bf16", "int8", "int8-cpu")
    peers: bool = True
    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 1
    iters: int = 5
    threads: int | None = None
    images: Path | None = None
    roofline: bool = True
    export_variant: str | None = None
    memory: bool = True
    collection: Path | None = None
    collection_precision: str = "int8-cpu"
    models: bool = True
    pause: float = 0.5
    command: str = "ijepa-bench"


def run_benchmark(opts: BenchOptions) -> dict:
    """Every measurement `opts` asks for, as one JSON-ready result."""
    manifest = Manifest.load(opts.artifacts)
    pre, arch = manifest.preprocessing, manifest.architecture
    gflop = arch.gflops_per_image(pre.height, pre.width)
    result = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "artifacts": manifest.name, "model": arch.describe(), "resolution": [pre.height, pre.width],
              "gflop_per_image": round(gflop, 3), "warmup": opts.warmup, "iters": opts.iters, "pause_s": opts.pause,
              "command": opts.command, "models": [], "memory_batch": max(opts.batch_sizes)}
    if opts.export_variant:  # first, before this process holds any model
        with tempfile.TemporaryDirectory() as tmp:
            result["export"] = bench_export(opts.export_variant, Path(tmp))
    peaks = matmul_peaks(opts.threads) if opts.roofline else None
    photos = bench_photos(opts.images)
    if opts.models:
        peaks = _compare_models(opts, manifest, photos, gflop, peaks, result)
        result["preprocessing"] = bench_preprocessing(manifest, photos, max(3, opts.iters))
    result["roofline"] = peaks
    if opts.collection:
        result["collection"] = bench_collection(opts.artifacts, opts.collection, opts.collection_precision, "auto", 64,
                                                None, max(2, opts.iters // 2))
    return result


def _compare_models(opts: BenchOptions, manifest: Manifest, photos: list[Path], gflop: float, peaks: dict | None,
                    result: dict) -> dict | None:
    """Every path of one batch size loaded together and interleaved; batch sizes one after the other."""
    import torch

    from ijepa_deploy.exporter.memory import release_memory

    preprocessor, cache = Preprocessor(manifest.preprocessing), {}

    def pixels_for(batch: int) -> np.ndarray:
        if batch not in cache:
            cache[batch] = preprocessor([photos[i % len(photos)] for i in range(batch)])
        return cache[batch]

    specs = plan_specs(manifest, list(opts.backends), list(opts.precisions), opts.peers)
    log.info("benchmarking %s: %d paths, batches %s", manifest.name, len(specs), list(opts.batch_sizes))
    with tempfile.TemporaryDirectory() as tmp:
        weights_dir = R.reference_weights_dir(manifest, Path(tmp) / "weights")
        result["best_peer"] = {}
        for batch in opts.batch_sizes:
            runners = [R.build(spec, opts.artifacts, manifest, weights_dir, opts.threads) for spec in specs]
            if torch.cuda.is_available():
                runners += R.torch_gpu_runners(weights_dir)
            gc.collect()
            rows, best = bench_models(runners, pixels_for, [batch], opts.warmup, opts.iters, gflop, peaks, opts.pause)
            result["models"] += rows
            result["best_peer"].update(best)
            for r in runners:
                r.close()
            del runners
            R.forget_models()
            release_memory()
        if peaks:  # again after the models: a shared machine's speed drifts; keep the best
            after = matmul_peaks(opts.threads)
            peaks = {k: max(v, after.get(k, 0)) if isinstance(v, float) else v for k, v in peaks.items()}
            for row in result["models"]:
                peak = peak_for(row["precision"], peaks) if row["device"] == "cpu" else None
                if peak:
                    row["fraction_of_peak"] = round(row["achieved_gflops"] / peak, 4)
        if opts.memory:
            result["peak_rss_mb"] = peak_memory(specs, opts.artifacts, weights_dir, max(opts.batch_sizes), opts.threads)
    return peaks
