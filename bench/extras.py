"""The benchmark's other measurements: preprocessing against ViTImageProcessor, the export itself, and
collections (sharded output against in-memory embedding)."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.manifest import Manifest
from ijepa_deploy.runtime.preprocessing import Preprocessor

from .machine import rss_mb
from .models import BenchError


def bench_photos(images: Path | None) -> list[Path]:
    if images:
        from ijepa_deploy.runtime.preprocessing import expand_inputs

        return expand_inputs([images])
    import skimage

    data = Path(skimage.__file__).parent / "data"
    return [data / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                               "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "camera.png", "ihc.png")]


def bench_preprocessing(manifest: Manifest, photos: list[Path], iters: int) -> dict:
    """Ours vs transformers' ViTImageProcessor (PIL backend) on the same photographs, from files
    and from already-decoded images. Outputs must be identical."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image
    from transformers import ViTImageProcessorPil

    pre = manifest.preprocessing
    ours = Preprocessor(pre)
    theirs = ViTImageProcessorPil(size={"height": pre.height, "width": pre.width}, resample=2,
                                  rescale_factor=pre.rescale_factor, image_mean=list(pre.mean), image_std=list(pre.std),
                                  do_convert_rgb=True)
    decoded = [ours.decode(p) for p in photos]
    with ThreadPoolExecutor(4) as pool:
        cases = {
            "from_files": (lambda: ours(photos, pool),
                           lambda: theirs(images=[Image.open(p) for p in photos], return_tensors="np")["pixel_values"]),
            "from_decoded": (lambda: ours(decoded, pool),
                             lambda: theirs(images=decoded, return_tensors="np")["pixel_values"]),
        }
        result = {"images": len(photos), "size": [pre.height, pre.width]}
        for label, (mine, hf) in cases.items():
            diff = float(np.abs(mine() - hf()).max())
            timings = {"ours": [], "hf": []}
            for _ in range(iters):
                for key, fn in (("ours", mine), ("hf", hf)):
                    start = time.perf_counter()
                    fn()
                    timings[key].append(time.perf_counter() - start)
            ips = {k: len(photos) / float(np.median(v)) for k, v in timings.items()}
            result[label] = {"ours_images_per_s": round(ips["ours"], 1),
                             "vit_image_processor_images_per_s": round(ips["hf"], 1),
                             "speedup": round(ips["ours"] / ips["hf"], 2), "max_abs_difference": diff}
    return result


def bench_export(variant: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "ijepa_deploy.cli.export", "--variant", variant, "--random-init", "--precision", "fp32",
           "--max-batch", "2", "--output-dir", str(out), "--overwrite", "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise BenchError(f"export benchmark failed: {proc.stderr.strip()[-300:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"variant": variant, "precision": "fp32", "seconds": round(seconds, 1), "peak_rss_gb": round(peak_kb / 2**20, 2),
            "command": "ijepa-export --variant " + variant + " --random-init --precision fp32 --max-batch 2"}


def bench_collection(folder: Path, images: Path, precision: str, backend: str, shard_size: int, batch: int | None,
                     iters: int) -> dict:
    """Sharded writing vs in-memory `Embedder.embed` on the same images with the same loaded Embedder,
    interleaved (both warmed up: compiling is not embedding); RSS sampled through the sharded runs."""
    from ijepa_deploy.collection.job import open_job
    from ijepa_deploy.collection.shard_writer import job_spec, write_shards
    from ijepa_deploy.runtime import EmbedConfig, Embedder
    from ijepa_deploy.runtime.sources import expand_sources

    paths = expand_sources([images])
    embedder = Embedder.load(folder, config=EmbedConfig(precision=precision, backend=backend, batch_size=batch))
    embedder.embed(paths[:embedder.batch_size() + 1])  # compiles the full-batch and the partial-batch models
    samples: list[tuple[float, int]] = []
    times: dict[str, list[float]] = {"memory": [], "sharded": []}
    spec = job_spec(embedder, folder, shard_size, "float32")
    for _ in range(iters):
        start = time.perf_counter()
        embedder.embed(paths)
        times["memory"].append(time.perf_counter() - start)
        stop = threading.Event()
        samples.clear()

        def sample():
            while not stop.is_set():
                samples.append((time.perf_counter(), rss_mb()))
                time.sleep(0.2)

        with tempfile.TemporaryDirectory() as tmp, open_job(Path(tmp) / "out", spec, [str(images)], False) as store:
            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            start = time.perf_counter()
            write_shards(embedder, store)
            times["sharded"].append(time.perf_counter() - start)
            stop.set()
            thread.join()
    embedder.close()
    ips = {k: len(paths) / float(np.median(v)) for k, v in times.items()}
    t0, t1 = samples[0][0], samples[-1][0]
    rss = [next(mb for t, mb in samples if t - t0 >= q * (t1 - t0)) for q in (0.25, 0.5, 0.75, 1.0)]
    return {"images": len(paths), "path": f"{precision} on {embedder.backend.describe()}", "shard_size": shard_size,
            "in_memory_images_per_s": round(ips["memory"], 2), "sharded_images_per_s": round(ips["sharded"], 2),
            "sharded_vs_in_memory": round(ips["sharded"] / ips["memory"], 3), "sharded_rss_mb": rss}
