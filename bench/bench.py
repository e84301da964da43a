"""`ijepa-bench`: our runtime against the baseline users run and the peers they could pick, in one run.

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
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np

from ijepa_deploy.runtime.atomic import check_writable, write_atomic
from ijepa_deploy.runtime.errors import click_entry, run_cli
from ijepa_deploy.runtime.manifest import Manifest
from ijepa_deploy.runtime.preprocessing import Preprocessor
from ijepa_deploy.runtime.similarity import centered_cosine, cosine_rows

from . import runners as R
from .report import render_markdown
from .roofline import matmul_peaks, peak_for

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_fp16")


def machine() -> dict:
    cpu, flags = "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = None
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    from ijepa_deploy.exporter.export import tool_versions

    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_flags": " ".join(f for f in FLAGS if f in flags),
            "memory_gb": round(mem, 1), "gpu": gpu, "os": platform.platform(), **tool_versions()}


def _photos(images: Path | None) -> list[Path]:
    if images:
        from ijepa_deploy.runtime.preprocessing import expand_inputs

        return expand_inputs([images])
    import skimage

    data = Path(skimage.__file__).parent / "data"
    return [data / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                               "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "camera.png", "ihc.png")]


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
            if backend == "openvino" and precision not in ("fp32", "bf16", "int8", "int8-cpu"):
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


def _peak_rss_mb() -> int:
    """VmHWM: unlike ru_maxrss it does not carry the high-water mark of the parent that forked us."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _rss_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024)
    return 0


def peak_memory(specs: list[str], folder: Path, weights: Path | None, batch: int, threads: int | None) -> dict:
    """Peak RSS (MB) of a fresh process that loads one path and runs one batch."""
    out = {}
    for spec in specs:
        cmd = [sys.executable, "-m", "ijepa_deploy.bench.bench", "--artifacts", str(folder), "--memory-probe", spec,
               "--batch-sizes", str(batch)] + (["--weights", str(weights)] if weights else []) + (
               ["--threads", str(threads)] if threads else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise click.ClickException(f"memory probe {spec} failed: {proc.stderr.strip()[-300:]}")
        out[spec] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    return out


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
    cmd = [sys.executable, "-m", "ijepa_deploy.exporter", "--variant", variant, "--random-init", "--precision", "fp32",
           "--max-batch", "2", "--output-dir", str(out), "--overwrite", "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise click.ClickException(f"export benchmark failed: {proc.stderr.strip()[-300:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"variant": variant, "precision": "fp32", "seconds": round(seconds, 1), "peak_rss_gb": round(peak_kb / 2**20, 2),
            "command": "ijepa-export --variant " + variant + " --random-init --precision fp32 --max-batch 2"}


def bench_collection(folder: Path, images: Path, precision: str, backend: str, shard_size: int, batch: int | None,
                     iters: int) -> dict:
    """Sharded writing vs in-memory `Embedder.embed` on the same images with the same loaded Embedder,
    interleaved (both warmed up: compiling is not embedding); RSS sampled through the sharded runs."""
    from dataclasses import asdict

    from ijepa_deploy.runtime import Embedder
    from ijepa_deploy.runtime.shards import RunRecord, prepare_folder, write_shards
    from ijepa_deploy.runtime.sources import expand_sources, iter_sources

    paths = expand_sources([images])
    embedder = Embedder.load(folder, precision, backend)
    embedder.embed(paths[:(batch or 8) + 1], batch)  # compiles the full-batch and the partial-batch models
    samples: list[tuple[float, int]] = []
    times: dict[str, list[float]] = {"memory": [], "sharded": []}
    record = RunRecord(name="bench", artifacts=str(folder), artifact_sha256="0" * 64, precision=precision,
                       backend=backend, preprocessing=json.loads(json.dumps(asdict(embedder.manifest.preprocessing))),
                       inputs=[str(images)], total=len(paths), shard_size=shard_size, dtype="float32", dim=embedder.dim)
    for _ in range(iters):
        start = time.perf_counter()
        embedder.embed(paths, batch)
        times["memory"].append(time.perf_counter() - start)
        stop = threading.Event()
        samples.clear()

        def sample():
            while not stop.is_set():
                samples.append((time.perf_counter(), _rss_mb()))
                time.sleep(0.2)

        with tempfile.TemporaryDirectory() as tmp:
            store = prepare_folder(Path(tmp) / "out", record, resume=False)
            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            start = time.perf_counter()
            write_shards(embedder, store, iter_sources([images]), len(paths), batch, quiet=True)
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


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""
\b
Examples:
  ijepa-bench --artifacts engines/vith14_1k --precision fp32,bf16,int8,int8-cpu --batch-sizes 1,8
  ijepa-bench --artifacts engines/vith14_1k --json benchmarks/cpu.json --markdown benchmarks/cpu.md --export-variant vith14
  ijepa-bench --artifacts engines/vith14_1k --collection photos/ --precision int8-cpu --models-off
""")
@click.option("--artifacts", required=True, type=click.Path(file_okay=False), help="Artifact folder from ijepa-export.")
@click.option("--backends", default="onnxruntime,openvino", show_default=True,
              help="Our backends to run: onnxruntime, openvino, tensorrt.")
@click.option("--precision", default="fp32,bf16,int8,int8-cpu", show_default=True, help="Our precisions to run.")
@click.option("--peers/--no-peers", default=True, show_default=True,
              help="Also run torch bf16 autocast and OpenVINO on our files with its default settings.")
@click.option("--batch-sizes", default="1,8", show_default=True)
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--iters", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every path (default: all cores).")
@click.option("--images", type=click.Path(), help="Photos (default: scikit-image's).")
@click.option("--roofline/--no-roofline", default=True, show_default=True, help="Measure this machine's matmul peaks.")
@click.option("--export-variant", help="Also time `ijepa-export --variant V --random-init` (fp32) and its peak RSS.")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Peak RSS per path, each in a fresh process at the largest batch size.")
@click.option("--collection", type=click.Path(file_okay=False), help="Also compare sharded output with in-memory "
                                                                     "embedding on this folder of images.")
@click.option("--collection-precision", default="int8-cpu", show_default=True)
@click.option("--models/--models-off", default=True, show_default=True, help="Run the model comparison.")
@click.option("--pause", default=0.5, show_default=True, help="Untimed seconds between runs (worker threads park).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the results as markdown.")
@click.option("--memory-probe", hidden=True, help="Internal: build one path, run one batch, print peak RSS.")
@click.option("--weights", hidden=True, type=click.Path(), help="Internal: the torch paths' weights folder.")
@click.option("--debug", is_flag=True)
def command(artifacts, backends, precision, peers, batch_sizes, warmup, iters, threads, images, roofline,
            export_variant, memory, collection, collection_precision, models, pause, json_path, md_path, memory_probe,
            weights, debug):
    """Benchmark our runtime against the transformers baseline and the peers, interleaved, on one machine."""

    def body():
        for target in (json_path, md_path):  # before any work: a run can take half an hour
            if target:
                check_writable(Path(target), "benchmark output")
        folder = Path(artifacts)
        manifest = Manifest.load(folder)
        sizes = [int(b) for b in batch_sizes.split(",")]
        pre = manifest.preprocessing
        if memory_probe:  # a shaped batch is all it needs: no photo decoding libraries in this process
            pixels = np.random.default_rng(0).uniform(-1, 1, (max(sizes), 3, pre.height, pre.width)).astype(np.float32)
            R.build(memory_probe, folder, manifest, Path(weights) if weights else None, threads).run(pixels)
            click.echo(json.dumps({"peak_rss_mb": _peak_rss_mb()}))
            return
        photos = _photos(Path(images) if images else None)
        preprocessor = Preprocessor(pre)
        cache: dict[int, np.ndarray] = {}

        def pixels_for(batch: int) -> np.ndarray:
            if batch not in cache:
                cache[batch] = preprocessor([photos[i % len(photos)] for i in range(batch)])
            return cache[batch]

        from ijepa_deploy.reference_model import Architecture

        arch = Architecture(**manifest.architecture)
        gflop = arch.gflops_per_image(pre.height, pre.width)
        result = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                  "artifacts": manifest.name, "model": arch.describe(), "resolution": [pre.height, pre.width],
                  "gflop_per_image": round(gflop, 3), "warmup": warmup, "iters": iters, "pause_s": pause,
                  "command": "ijepa-bench " + " ".join(sys.argv[1:]), "models": [], "memory_batch": max(sizes)}
        if export_variant:  # first, before this process holds any model
            with tempfile.TemporaryDirectory() as tmp:
                result["export"] = bench_export(export_variant, Path(tmp))
        peaks = matmul_peaks(threads) if roofline else None
        if models:
            specs = plan_specs(manifest, [b.strip() for b in backends.split(",") if b.strip()],
                               [p.strip() for p in precision.split(",") if p.strip()], peers)
            click.echo(f"benchmarking {manifest.name}: {len(specs)} paths, batches {sizes}", err=True)
            with tempfile.TemporaryDirectory() as tmp:
                weights_dir = R.reference_weights_dir(manifest, Path(tmp) / "weights")
                result["best_peer"] = {}
                import torch

                from ijepa_deploy.exporter.export import release_memory

                for batch in sizes:  # every path of one batch size in memory together, interleaved
                    runners = [R.build(spec, folder, manifest, weights_dir, threads) for spec in specs]
                    if torch.cuda.is_available():
                        runners += R.torch_gpu_runners(weights_dir)
                    gc.collect()
                    rows, best = bench_models(runners, pixels_for, [batch], warmup, iters, gflop, peaks, pause)
                    result["models"] += rows
                    result["best_peer"].update(best)
                    for r in runners:
                        r.close()
                    del runners
                    R.forget_models()
                    release_memory()
                if roofline:  # again after the models: a shared machine's speed drifts; keep the best
                    after = matmul_peaks(threads)
                    peaks = {k: max(v, after.get(k, 0)) if isinstance(v, float) else v for k, v in peaks.items()}
                    for row in result["models"]:
                        peak = peak_for(row["precision"], peaks) if row["device"] == "cpu" else None
                        if peak:
                            row["fraction_of_peak"] = round(row["achieved_gflops"] / peak, 4)
                result["peak_rss_mb"] = peak_memory(specs, folder, weights_dir, max(sizes), threads) if memory else None
            result["preprocessing"] = bench_preprocessing(manifest, photos, max(3, iters))
        result["roofline"] = peaks
        if collection:
            result["collection"] = bench_collection(folder, Path(collection), collection_precision, "auto", 64,
                                                    None, max(2, iters // 2))
        text = render_markdown(result)
        if json_path:
            write_atomic(Path(json_path), json.dumps(result, indent=2) + "\n")
        if md_path:
            write_atomic(Path(md_path), text)
        click.echo(text)

    run_cli(body, debug)


main = click_entry(command)

if __name__ == "__main__":  # pragma: no cover
    main()
