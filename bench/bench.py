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

from ijepa_deploy.runtime.embedder import cosine_rows
from ijepa_deploy.runtime.manifest import Manifest
from ijepa_deploy.runtime.preprocessing import Preprocessor


BASELINE = "torch transformers-eager fp32"


@dataclass
class Runner:
    name: str
    backend: str
    precision: str
    run: Callable[[np.ndarray], np.ndarray]  # pixels -> embedding
    peak_key: str  # which measured CPU peak bounds it: "fp32", "int8", or "gpu" (none measured)
    model: object = None  # the torch module, for the GPU copies of the baseline
    spec: str = ""  # how to build it again: "torch:transformers", "onnxruntime:int8", ...


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = None
    if "torch" in sys.modules:  # only ask torch when it is loaded anyway (the torch baselines)
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    from .export import tool_versions

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem, 1), "gpu": gpu,
            "os": platform.platform(), **tool_versions()}


# ----------------------------------------------------------------------------- roofline


def matmul_peaks(threads: int | None = None, m: int = 2048, k: int = 1280, n: int = 5120, iters: int = 5) -> dict:
    """ONNX Runtime fp32 MatMul and int8 MatMulInteger throughput at a ViT-H MLP shape (GFLOP/s, GOP/s),
    best of `iters`: a peak is the best this machine showed, not its typical speed."""
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
        peaks[key] = 2 * m * k * n / float(np.min(times)) / 1e9
    return {"shape": [m, k, n], "fp32_matmul_gflops": round(peaks["fp32"], 1),
            "int8_matmulinteger_gops": round(peaks["int8"], 1)}


# ----------------------------------------------------------------------------- runners


def reference_weights_dir(manifest: Manifest, folder: Path) -> Path:
    """The artifact's weights as a Hugging Face folder, so both torch baselines (and the memory
    probes) load exactly the weights the artifacts were exported from."""
    from ijepa_deploy.reference_model import load_checkpoint, save_hf_checkpoint

    src = manifest.checkpoint
    if src["kind"] == "random-init":
        loaded = load_checkpoint(variant=src["variant"], random_init=True, seed=src["seed"])
    elif src["kind"] == "original-ijepa":
        loaded = load_checkpoint(src["location"], variant=src.get("variant"), encoder=src.get("encoder") or "context")
    else:
        loaded = load_checkpoint(src["location"])
    return save_hf_checkpoint(loaded.model, folder)


def torch_runner(kind: str, weights: Path, threads: int | None) -> Runner:
    """`transformers` (IJepaModel, eager attention: the model card's usage) or `reference` (ours)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if kind == "reference":
        from ijepa_deploy.reference_model import load_checkpoint

        model = load_checkpoint(weights).model

        def run(pixels: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(pixels)).embedding.numpy()

        return Runner("torch reference fp32", "torch", "fp32", run, "fp32")
    from transformers import IJepaModel

    hf = IJepaModel.from_pretrained(weights, attn_implementation="eager").eval()

    def run_hf(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(pixels)
            interpolate = tuple(x.shape[-2:]) != (hf.config.image_size, hf.config.image_size)
            return hf(x, interpolate_pos_encoding=interpolate).last_hidden_state.mean(dim=1).numpy()

    return Runner(BASELINE, "torch", "fp32", run_hf, "fp32", model=hf)


def _torch_gpu_runners(hf) -> list[Runner]:
    """The same transformers model on the GPU: fp32, and fp16 / bf16 autocast (the model card's dtype)."""
    import copy

    import torch

    gpu = copy.deepcopy(hf).to("cuda")
    runners = []
    for label, dtype in (("fp32", None), ("fp16 autocast", torch.float16), ("bf16 autocast", torch.bfloat16)):
        def run(pixels: np.ndarray, dtype=dtype) -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                x = torch.from_numpy(pixels).to("cuda", non_blocking=True)
                interpolate = tuple(x.shape[-2:]) != (gpu.config.image_size, gpu.config.image_size)
                out = gpu(x, interpolate_pos_encoding=interpolate).last_hidden_state.float().mean(dim=1)
                return out.cpu().numpy()  # .cpu() synchronizes, so the timing covers the GPU work

        runners.append(Runner(f"torch transformers-eager {label} cuda", "torch-cuda", label, run, "gpu"))
    return runners


def artifact_runner(folder: Path, backend: str, precision: str, threads: int | None) -> Runner:
    from ijepa_deploy.runtime import Embedder

    embedder = Embedder.load(folder, precision, backend=backend, threads=threads)

    def run(pixels: np.ndarray) -> np.ndarray:
        return embedder.backend.run(pixels, ["embedding"])["embedding"]

    on_cpu = embedder.backend.name == "onnxruntime" and "CUDAExecutionProvider" not in embedder.backend.providers
    peak = ("int8" if precision.startswith("int8") else "fp32") if on_cpu else "gpu"
    return Runner(f"{embedder.backend.name} {precision}", embedder.backend.name, precision, run, peak)


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
                 iters: int, gflop_per_image: float, peaks: dict | None, pause: float = 0.5) -> list[dict]:
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
                time.sleep(pause)  # untimed: lets the previous runner's spinning worker threads park
                start = time.perf_counter()
                r.run(pixels)
                times[r.name].append(time.perf_counter() - start)
        base = outputs.get(BASELINE)
        base_ips = batch / float(np.median(times[BASELINE])) if BASELINE in times else None
        for r in runners:
            t = np.asarray(times[r.name])
            ips = batch / float(np.median(t))
            row = {"backend": r.name, "spec": r.spec, "batch": batch, "images_per_s": round(ips, 3),
                   "latency_p50_ms": round(float(np.percentile(t, 50)) * 1e3, 1),
                   "latency_p95_ms": round(float(np.percentile(t, 95)) * 1e3, 1),
                   "iters": iters,
                   "ratio_vs_transformers": round(ips / base_ips, 3) if base_ips else None,
                   "cosine_vs_transformers": (round(float(cosine_rows(outputs[r.name], base).min()), 6)
                                              if base is not None else None),
                   "achieved_gflops": round(ips * gflop_per_image, 1)}
            if peaks and r.peak_key in ("fp32", "int8"):  # the measured peaks are this machine's CPU
                peak = peaks["int8_matmulinteger_gops"] if r.peak_key == "int8" else peaks["fp32_matmul_gflops"]
                row["fraction_of_peak"] = round(ips * gflop_per_image / peak, 3)
            results.append(row)
    return results


def _runner_for(spec: str, folder: Path, weights: Path | None, threads: int | None) -> Runner:
    backend, _, what = spec.partition(":")
    return torch_runner(what, weights, threads) if backend == "torch" else artifact_runner(folder, backend, what, threads)


def _peak_rss_mb() -> int:
    """This process's peak RSS. VmHWM belongs to the address space, so unlike ru_maxrss it does not
    carry over the high-water mark of the parent that forked this process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_memory(specs: list[str], folder: Path, weights: Path | None, batch: int, threads: int | None) -> dict:
    """Peak RSS (MB) of a fresh process that loads one backend and runs one batch: no sharing,
    no allocator reuse between backends, so each figure stands alone."""
    out = {}
    for spec in specs:
        cmd = [sys.executable, "-m", "ijepa_deploy.exporter.bench", "--artifacts", str(folder), "--memory-probe", spec,
               "--batch-sizes", str(batch)] + (["--weights", str(weights)] if weights else []) + (
               ["--threads", str(threads)] if threads else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise click.ClickException(f"memory probe {spec} failed: {proc.stderr.strip()[-300:]}")
        out[spec] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    return out


def bench_preprocessing(manifest: Manifest, photos: list[Path], iters: int) -> dict:
    """Ours vs transformers' ViTImageProcessor (PIL backend) on the same photographs, from files
    (decode included; PIL decodes for both) and from already-decoded images (what the processor
    itself does). Outputs must be identical."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image
    from transformers import ViTImageProcessorPil

    from ijepa_deploy.runtime.preprocessing import decode

    pre = manifest.preprocessing
    ours = Preprocessor(pre)
    theirs = ViTImageProcessorPil(size={"height": pre["height"], "width": pre["width"]}, resample=2,
                                  rescale_factor=pre["rescale_factor"], image_mean=pre["mean"], image_std=pre["std"],
                                  do_convert_rgb=True)
    decoded = [decode(p) for p in photos]
    with ThreadPoolExecutor(4) as pool:
        cases = {
            "from_files": (lambda: ours(photos, pool),
                           lambda: theirs(images=[Image.open(p) for p in photos], return_tensors="np")["pixel_values"]),
            "from_decoded": (lambda: ours(decoded, pool),
                             lambda: theirs(images=decoded, return_tensors="np")["pixel_values"]),
        }
        result = {"images": len(photos), "size": [pre["height"], pre["width"]]}
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
    memory = result.get("peak_rss_mb") or {}
    lines += ["| backend | batch | images/s | p50 ms | p95 ms | x transformers | cosine vs transformers | % of peak | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in result["models"]:
        frac = f"{100 * row['fraction_of_peak']:.0f}%" if row.get("fraction_of_peak") is not None else "-"
        lines.append(f"| {row['backend']} | {row['batch']} | {row['images_per_s']:.2f} | {row['latency_p50_ms']:.0f} | "
                     f"{row['latency_p95_ms']:.0f} | {row['ratio_vs_transformers'] or '-'} | "
                     f"{row['cosine_vs_transformers'] if row['cosine_vs_transformers'] is not None else '-'} | {frac} | "
                     f"{memory.get(row['spec'], '-')} |")
    if memory:
        lines += ["", f"Peak RSS: a fresh process that loads that backend alone and runs one batch of "
                      f"{result['memory_batch']}."]
    if result.get("preprocessing"):
        p = result["preprocessing"]
        lines += ["", f"Preprocessing, {p['images']} photos -> {p['size'][0]}x{p['size'][1]} (identical output required):", "",
                  "| input | ours images/s | ViTImageProcessor images/s | speed-up | max abs difference |", "|---|---|---|---|---|"]
        for label in ("from_files", "from_decoded"):
            q = p[label]
            lines.append(f"| {label.replace('_', ' ')} | {q['ours_images_per_s']} | {q['vit_image_processor_images_per_s']} | "
                         f"{q['speedup']}x | {q['max_abs_difference']:.1e} |")
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
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Peak RSS per backend, each in a fresh process at the largest batch size.")
@click.option("--pause", default=0.5, show_default=True, help="Untimed seconds between runs (worker threads park).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the results as a markdown table.")
@click.option("--memory-probe", hidden=True, help="Internal: load one backend spec, run one batch, print peak RSS.")
@click.option("--weights", hidden=True, type=click.Path(), help="Internal: the torch baselines' weights folder.")
def main(artifacts, backends, precision, batch_sizes, warmup, iters, threads, images, roofline, export_variant,
         memory, pause, json_path, md_path, memory_probe, weights):
    """Benchmark torch baselines and exported artifacts side by side on one machine."""
    folder = Path(artifacts)
    manifest = Manifest.load(folder)
    backend_list = [b.strip() for b in backends.split(",") if b.strip()]
    precisions = [p.strip() for p in precision.split(",") if p.strip()]
    sizes = [int(b) for b in batch_sizes.split(",")]
    pre = manifest.preprocessing
    if memory_probe:  # a shaped batch is all it needs: no photo decoding libraries in this process
        pixels = np.random.default_rng(0).uniform(-1, 1, (max(sizes), 3, pre["height"], pre["width"])).astype(np.float32)
        _runner_for(memory_probe, folder, Path(weights) if weights else None, threads).run(pixels)
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
    gflop = arch.gflops_per_image(pre["height"], pre["width"])
    click.echo(f"benchmarking {manifest.name}: {backend_list} x {precisions}, batches {sizes}", err=True)
    export_result = None
    if export_variant:  # first, before this process holds any model
        with tempfile.TemporaryDirectory() as tmp:
            export_result = bench_export(export_variant, Path(tmp))
        click.echo(f"  export: {export_result['seconds']} s, peak RSS {export_result['peak_rss_gb']} GB", err=True)
    peaks = matmul_peaks(threads) if roofline else None

    specs = [f"torch:{k}" for k in ("transformers", "reference") if "torch" in backend_list]
    specs += [f"{b}:{p}" for b in backend_list if b != "torch" for p in precisions
              if p in manifest.artifacts or (b == "tensorrt" and p in manifest.engines)]
    with tempfile.TemporaryDirectory() as tmp:
        weights_dir = reference_weights_dir(manifest, Path(tmp) / "weights") if "torch" in backend_list else None
        runners = []
        for spec in specs:
            runner = _runner_for(spec, folder, weights_dir, threads)
            runner.spec = spec
            runners.append(runner)
        if "torch" in backend_list:
            import torch

            if torch.cuda.is_available():
                runners += _torch_gpu_runners(runners[0].model)
        gc.collect()
        models = bench_models(runners, pixels_for, sizes, warmup, iters, gflop, peaks, pause)
        del runners
        gc.collect()
        if roofline:  # measured again after the models: a shared machine's speed drifts; keep the best
            after = matmul_peaks(threads)
            peaks = {k: max(v, after[k]) if isinstance(v, float) else v for k, v in peaks.items()}
            for row in models:
                if row.get("fraction_of_peak") is not None:
                    key = "int8_matmulinteger_gops" if "int8" in row["backend"] else "fp32_matmul_gflops"
                    row["fraction_of_peak"] = round(row["achieved_gflops"] / peaks[key], 3)
        peak_rss = peak_memory(specs, folder, weights_dir, max(sizes), threads) if memory else None
    result = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "artifacts": manifest.name, "model": arch.describe(), "resolution": [pre["height"], pre["width"]],
        "gflop_per_image": round(gflop, 3), "warmup": warmup, "iters": iters, "pause_s": pause, "roofline": peaks,
        "models": models, "peak_rss_mb": peak_rss, "memory_batch": max(sizes),
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
