"""`ijepa-bench`: side-by-side throughput of torch baselines and our artifacts, in one run.

Every backend runs the same pixel batch; runs are interleaved (A B C A B C ...) so drift in the
machine's state hits all of them alike. Reported per backend and batch size: images/s, latency
p50/p95, resident memory taken by the loaded backend, ratio to the `transformers` eager fp32
baseline (the model card's usage), cosine of its embeddings vs that baseline, and the fraction
of this machine's measured MatMul peak it reaches. Preprocessing is measured separately (ours vs
ViTImageProcessor on the same photographs), and optionally the export itself (time, peak RSS).
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click
import numpy as np

from ijepa_deploy.runtime.manifest import Manifest
from ijepa_deploy.runtime.preprocessing import Preprocessor

from .export import tool_versions
from .validation import cosine_rows

BASELINE = "torch transformers-eager fp32"


@dataclass
class Runner:
    name: str
    backend: str
    precision: str
    run: Callable[[np.ndarray], np.ndarray]  # pixels -> embedding
    rss_mb: float  # resident memory added by loading it
    peak_key: str  # which measured peak bounds it: "fp32" or "int8"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem, 1), "gpu": gpu,
            "os": platform.platform(), **tool_versions()}


# ----------------------------------------------------------------------------- roofline


def matmul_peaks(threads: int | None = None, m: int = 2048, k: int = 1280, n: int = 5120, iters: int = 5) -> dict:
    """ONNX Runtime fp32 MatMul and int8 MatMulInteger throughput at a ViT-H MLP shape (GFLOP/s, GOP/s)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graphs = {
        "fp32": (helper.make_node("MatMul", ["a", "w"], ["y"]), TensorProto.FLOAT, TensorProto.FLOAT,
                 rng.standard_normal((k, n), dtype=np.float32), rng.standard_normal((m, k), dtype=np.float32)),
        "int8": (helper.make_node("MatMulInteger", ["a", "w"], ["y"]), TensorProto.UINT8, TensorProto.INT32,
                 rng.integers(-127, 127, (k, n), dtype=np.int8), rng.integers(0, 255, (m, k), dtype=np.uint8)),
    }
    peaks = {}
    for key, (node, in_type, out_type, weight, activation) in graphs.items():
        graph = helper.make_graph([node], key, [helper.make_tensor_value_info("a", in_type, [m, k])],
                                  [helper.make_tensor_value_info("y", out_type, [m, n])],
                                  [numpy_helper.from_array(weight, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {"a": activation})
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            session.run(None, {"a": activation})
            times.append(time.perf_counter() - start)
        peaks[key] = 2 * m * k * n / float(np.median(times)) / 1e9
    return {"shape": [m, k, n], "fp32_matmul_gflops": round(peaks["fp32"], 1),
            "int8_matmulinteger_gops": round(peaks["int8"], 1)}


# ----------------------------------------------------------------------------- runners


def _torch_runners(folder: Path, manifest: Manifest, threads: int | None) -> list[Runner]:
    import torch

    from ijepa_deploy.reference_model import load_checkpoint, save_hf_checkpoint

    if threads:
        torch.set_num_threads(threads)
    src = manifest.checkpoint
    before = rss_mb()
    if src["kind"] == "random-init":
        loaded = load_checkpoint(variant=src["variant"], random_init=True, seed=src["seed"])
    elif src["kind"] == "original-ijepa":
        loaded = load_checkpoint(src["location"], variant=src.get("variant"), encoder=src.get("encoder") or "context")
    else:
        loaded = load_checkpoint(src["location"])
    reference = loaded.model
    ref_rss = rss_mb() - before

    from transformers import IJepaModel

    before = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        hf = IJepaModel.from_pretrained(save_hf_checkpoint(reference, Path(tmp)), attn_implementation="eager").eval()
    hf_rss = rss_mb() - before

    def run_hf(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(pixels)
            interpolate = tuple(x.shape[-2:]) != (hf.config.image_size, hf.config.image_size)
            return hf(x, interpolate_pos_encoding=interpolate).last_hidden_state.mean(dim=1).numpy()

    def run_reference(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return reference(torch.from_numpy(pixels)).embedding.numpy()

    return [Runner(BASELINE, "torch", "fp32", run_hf, hf_rss, "fp32"),
            Runner("torch reference fp32", "torch", "fp32", run_reference, ref_rss, "fp32")]


def _artifact_runner(folder: Path, manifest: Manifest, backend: str, precision: str, threads: int | None) -> Runner:
    from ijepa_deploy.runtime import Embedder

    before = rss_mb()
    embedder = Embedder.load(folder, precision, backend=backend, threads=threads)
    added = rss_mb() - before

    def run(pixels: np.ndarray) -> np.ndarray:
        return embedder.backend.run(pixels, ["embedding"])["embedding"]

    peak = "int8" if precision.startswith("int8") else "fp32"
    return Runner(f"{embedder.backend.name} {precision}", embedder.backend.name, precision, run, added, peak)


# ----------------------------------------------------------------------------- measurements


def _photos(images: Path | None) -> list[Path]:
    if images:
        from ijepa_deploy.runtime.preprocessing import expand_inputs

        return expand_inputs([images])
    import skimage

    data = Path(skimage.__file__).parent / "data"
    return [data / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                               "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "camera.png", "ihc.png")]


def bench_models(runners: list[Runner], pixels_for: Callable[[int], np.ndarray], batch_sizes: list[int], warmup: int,
                 iters: int, gflop_per_image: float, peaks: dict | None) -> list[dict]:
    results = []
    for batch in batch_sizes:
        pixels = pixels_for(batch)
        outputs = {}
        for r in runners:
            for _ in range(warmup):
                outputs[r.name] = r.run(pixels)
        times: dict[str, list[float]] = {r.name: [] for r in runners}
        for _ in range(iters):  # interleaved: A B C A B C ...
            for r in runners:
                start = time.perf_counter()
                r.run(pixels)
                times[r.name].append(time.perf_counter() - start)
        base = outputs.get(BASELINE)
        base_ips = batch / float(np.median(times[BASELINE])) if BASELINE in times else None
        for r in runners:
            t = np.asarray(times[r.name])
            ips = batch / float(np.median(t))
            row = {"backend": r.name, "batch": batch, "images_per_s": round(ips, 3),
                   "latency_p50_ms": round(float(np.percentile(t, 50)) * 1e3, 1),
                   "latency_p95_ms": round(float(np.percentile(t, 95)) * 1e3, 1),
                   "loaded_rss_mb": round(r.rss_mb, 1), "iters": iters,
                   "ratio_vs_transformers": round(ips / base_ips, 3) if base_ips else None,
                   "cosine_vs_transformers": (round(float(cosine_rows(outputs[r.name], base).min()), 6)
                                              if base is not None else None),
                   "achieved_gflops": round(ips * gflop_per_image, 1)}
            if peaks:
                peak = peaks["int8_matmulinteger_gops"] if r.peak_key == "int8" else peaks["fp32_matmul_gflops"]
                row["fraction_of_peak"] = round(ips * gflop_per_image / peak, 3)
            results.append(row)
    return results


def bench_preprocessing(manifest: Manifest, photos: list[Path], iters: int) -> dict:
    from PIL import Image
    from transformers import ViTImageProcessorPil

    pre = manifest.preprocessing
    ours = Preprocessor(pre)
    theirs = ViTImageProcessorPil(size={"height": pre["height"], "width": pre["width"]}, resample=2,
                                  rescale_factor=pre["rescale_factor"], image_mean=pre["mean"], image_std=pre["std"],
                                  do_convert_rgb=True)
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(4)
    a = ours(photos, pool)
    b = theirs(images=[Image.open(p) for p in photos], return_tensors="np")["pixel_values"]
    timings = {"ours": [], "ViTImageProcessor": []}
    for _ in range(iters):
        start = time.perf_counter()
        ours(photos, pool)
        timings["ours"].append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs(images=[Image.open(p) for p in photos], return_tensors="np")
        timings["ViTImageProcessor"].append(time.perf_counter() - start)
    pool.shutdown()
    ips = {k: len(photos) / float(np.median(v)) for k, v in timings.items()}
    return {"images": len(photos), "size": [pre["height"], pre["width"]], "from": "decode from file, resize, normalize",
            "ours_images_per_s": round(ips["ours"], 1), "vit_image_processor_images_per_s": round(ips["ViTImageProcessor"], 1),
            "speedup": round(ips["ours"] / ips["ViTImageProcessor"], 2), "max_abs_difference": float(np.abs(a - b).max())}


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


def render_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# ijepa-bench: {result['artifacts']} ({result['created']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM"
             + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU") + f"; {m['os']}",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m.items()
                                     if k not in ("cpu", "cores", "memory_gb", "gpu", "os")),
             f"Model: {result['model']} at {result['resolution'][0]}x{result['resolution'][1]}, "
             f"{result['gflop_per_image']:.3g} GFLOP/image; warmup {result['warmup']}, {result['iters']} interleaved iterations",
             ""]
    if result.get("roofline"):
        r = result["roofline"]
        lines += [f"Measured peak (ONNX Runtime, {r['shape'][0]}x{r['shape'][1]}x{r['shape'][2]}): fp32 MatMul "
                  f"{r['fp32_matmul_gflops']} GFLOP/s, int8 MatMulInteger {r['int8_matmulinteger_gops']} GOP/s", ""]
    lines += ["| backend | batch | images/s | p50 ms | p95 ms | x transformers | cosine vs transformers | % of peak | loaded RSS MB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in result["models"]:
        frac = f"{100 * row['fraction_of_peak']:.0f}%" if row.get("fraction_of_peak") is not None else "-"
        lines.append(f"| {row['backend']} | {row['batch']} | {row['images_per_s']:.2f} | {row['latency_p50_ms']:.0f} | "
                     f"{row['latency_p95_ms']:.0f} | {row['ratio_vs_transformers'] or '-'} | "
                     f"{row['cosine_vs_transformers'] if row['cosine_vs_transformers'] is not None else '-'} | {frac} | "
                     f"{row['loaded_rss_mb']:.0f} |")
    if result.get("preprocessing"):
        p = result["preprocessing"]
        lines += ["", f"Preprocessing ({p['images']} photos -> {p['size'][0]}x{p['size'][1]}, {p['from']}): ours "
                      f"{p['ours_images_per_s']} images/s, ViTImageProcessor {p['vit_image_processor_images_per_s']} images/s "
                      f"({p['speedup']}x), max abs difference {p['max_abs_difference']:.1e}"]
    if result.get("export"):
        e = result["export"]
        lines += ["", f"Export: `{e['command']}` took {e['seconds']} s, peak RSS {e['peak_rss_gb']} GB"]
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""
\b
Examples:
  ijepa-bench --artifacts engines/vith14_1k --backends torch,onnxruntime --precision fp32,int8 --batch-sizes 1,8
  ijepa-bench --artifacts engines/vith14_1k --json benchmarks/cpu.json --markdown benchmarks/cpu.md --export-variant vith14
""")
@click.option("--artifacts", required=True, type=click.Path(file_okay=False), help="Artifact folder from ijepa-export.")
@click.option("--backends", default="torch,onnxruntime", show_default=True, help="Comma list: torch, onnxruntime, tensorrt.")
@click.option("--precision", default="fp32,int8", show_default=True,
              help="Artifact precisions for onnxruntime/tensorrt (fp32, fp16, int8, and CPU-optimized fp32-cpu/int8-cpu).")
@click.option("--batch-sizes", default="1,8", show_default=True)
@click.option("--warmup", default=1, show_default=True)
@click.option("--iters", default=5, show_default=True)
@click.option("--threads", type=int, help="Threads for torch and ONNX Runtime (default: all cores).")
@click.option("--images", type=click.Path(), help="Photos for the preprocessing benchmark (default: scikit-image's).")
@click.option("--roofline/--no-roofline", default=True, show_default=True, help="Measure this machine's MatMul peaks.")
@click.option("--export-variant", help="Also time `ijepa-export --variant V --random-init` (fp32) and its peak RSS.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the results as a markdown table.")
def main(artifacts, backends, precision, batch_sizes, warmup, iters, threads, images, roofline, export_variant,
         json_path, md_path):
    """Benchmark torch baselines and exported artifacts side by side on one machine."""
    folder = Path(artifacts)
    manifest = Manifest.load(folder)
    backend_list = [b.strip() for b in backends.split(",") if b.strip()]
    precisions = [p.strip() for p in precision.split(",") if p.strip()]
    sizes = [int(b) for b in batch_sizes.split(",")]
    pre = manifest.preprocessing
    from ijepa_deploy.reference_model import Architecture

    arch = Architecture(**manifest.architecture)
    gflop = arch.gflops_per_image(pre["height"], pre["width"])
    click.echo(f"benchmarking {manifest.name}: {backend_list} x {precisions}, batches {sizes}", err=True)

    export_result = None
    if export_variant:  # first, before this process holds any model
        with tempfile.TemporaryDirectory() as tmp:
            export_result = bench_export(export_variant, Path(tmp))
        click.echo(f"  export: {export_result['seconds']} s, peak RSS {export_result['peak_rss_gb']} GB", err=True)
    peaks = matmul_peaks(threads) if roofline else None
    runners: list[Runner] = []
    if "torch" in backend_list:
        runners += _torch_runners(folder, manifest, threads)
    for backend in [b for b in backend_list if b != "torch"]:
        for p in precisions:
            if p in manifest.artifacts or (backend == "tensorrt" and p in manifest.engines):
                runners.append(_artifact_runner(folder, manifest, backend, p, threads))
    gc.collect()
    photos = _photos(Path(images) if images else None)
    preprocessor = Preprocessor(pre)
    cache: dict[int, np.ndarray] = {}

    def pixels_for(batch: int) -> np.ndarray:
        if batch not in cache:
            cache[batch] = preprocessor([photos[i % len(photos)] for i in range(batch)])
        return cache[batch]

    result = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "artifacts": manifest.name, "model": arch.describe(), "resolution": [pre["height"], pre["width"]],
        "gflop_per_image": round(gflop, 3), "warmup": warmup, "iters": iters, "roofline": peaks,
        "models": bench_models(runners, pixels_for, sizes, warmup, iters, gflop, peaks),
        "preprocessing": bench_preprocessing(manifest, photos, max(3, iters)) if "torch" in backend_list else None,
        "export": export_result,
    }
    text = render_markdown(result)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    if md_path:
        Path(md_path).write_text(text)
    click.echo(text)


if __name__ == "__main__":  # pragma: no cover
    main()
