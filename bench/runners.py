"""What the benchmark runs: the baseline users run by default, the peers they could pick instead,
and our runtime's paths. Every runner maps a float32 pixel batch to pooled embeddings.

- baseline: `transformers` IJepaModel as `from_pretrained` gives it (default attention: SDPA), fp32,
  exactly the model card's usage;
- peers: torch bf16 autocast of the same model; OpenVINO on our own ONNX files as a user would
  run it (`compile_model(file, "CPU")`, default settings, and with the f32 / bf16 hints); on a GPU,
  torch fp16/bf16 autocast;
- ours: `Embedder` with each exported precision on each backend, as `Embedder.load` configures it.
A runner is named by a spec string so that a fresh process can build it alone (memory probes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ijepa_deploy.contract.manifest import Manifest

BASELINE = "transformers fp32 (SDPA)"


@dataclass
class Runner:
    name: str
    role: str  # "baseline" | "peer" | "ours"
    precision: str  # what it computes in: fp32, bf16, int8, ...
    run: Callable[[np.ndarray], np.ndarray]
    spec: str
    device: str = "cpu"
    close: Callable[[], None] = field(default=lambda: None)


def reference_weights_dir(manifest: Manifest, folder: Path) -> Path:
    """The artifact's weights as a Hugging Face folder, so the torch runners load exactly the
    weights the artifacts were exported from."""
    from ijepa_deploy.reference_model import load_checkpoint, save_hf_checkpoint

    src = manifest.checkpoint
    if src.kind == "random-init":
        loaded = load_checkpoint(variant=src.variant, random_init=True, seed=src.seed)
    elif src.kind == "original-ijepa":
        loaded = load_checkpoint(src.location, variant=src.variant, encoder=src.encoder or "context")
    else:  # a bare safetensors file needs its variant too
        loaded = load_checkpoint(src.location, variant=src.variant)
    return save_hf_checkpoint(loaded.model, folder)


_LOADED: dict[Path, object] = {}  # one transformers model serves the fp32 baseline and its bf16 autocast


def _transformers(weights: Path, threads: int | None):
    import torch
    from transformers import IJepaModel

    if threads:
        torch.set_num_threads(threads)
    if weights not in _LOADED:
        _LOADED[weights] = IJepaModel.from_pretrained(weights).eval()  # the default attention (SDPA)
    return _LOADED[weights]


def forget_models() -> None:
    """Drop the shared transformers models (between batch sizes, to bound memory)."""
    _LOADED.clear()


def torch_runner(kind: str, weights: Path, threads: int | None) -> Runner:
    """`transformers` fp32 (the baseline) or bf16 autocast (a peer), on the CPU."""
    import torch

    model = _transformers(weights, threads)
    dtype = torch.bfloat16 if kind == "transformers-bf16" else None

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            x = torch.from_numpy(pixels)
            interpolate = tuple(x.shape[-2:]) != (model.config.image_size, model.config.image_size)
            return model(x, interpolate_pos_encoding=interpolate).last_hidden_state.float().mean(dim=1).numpy()

    if dtype is None:
        return Runner(BASELINE, "baseline", "fp32", run, f"torch:{kind}")
    return Runner("torch bf16 autocast", "peer", "bf16", run, f"torch:{kind}")


def torch_gpu_runners(weights: Path) -> list[Runner]:
    """The same transformers model on the GPU: fp32, and fp16 / bf16 autocast."""
    import torch

    model = _transformers(weights, None).to("cuda")
    runners = []
    for label, dtype in (("fp32", None), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        def run(pixels: np.ndarray, dtype=dtype) -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                x = torch.from_numpy(pixels).to("cuda", non_blocking=True)
                out = model(x).last_hidden_state.float().mean(dim=1)
                return out.cpu().numpy()  # .cpu() synchronizes: the timing covers the GPU work

        role = "baseline" if dtype is None else "peer"
        runners.append(Runner(f"transformers {label} cuda", role, label, run, f"torch-cuda:{label}", "cuda"))
    return runners


def openvino_peer(folder: Path, manifest: Manifest, precision: str, hint: str, threads: int | None) -> Runner:
    """OpenVINO on our ONNX file the way a user would call it: default settings, or one hint."""
    import openvino as ov

    art = manifest.artifact(precision)
    config = {} if hint == "default" else {"INFERENCE_PRECISION_HINT": hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(folder / art.file), "CPU", config)
    request = compiled.create_infer_request()
    computes = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # "bf16" / "f32"

    def run(pixels: np.ndarray) -> np.ndarray:
        request.infer({manifest.input_name: pixels})
        return request.get_tensor("embedding").data.copy()

    label = f"OpenVINO on {art.file} ({'default: ' + computes if hint == 'default' else hint})"
    # a quantized file's MatMuls run in int8 whatever the float ops compute in
    return Runner(label, "peer", precision if art.quantization else computes, run,
                  f"openvino-peer:{precision}:{hint}")


def ours_runner(folder: Path, backend: str, precision: str, threads: int | None) -> Runner:
    """Our runtime, as `Embedder.load` sets the backend up."""
    from ijepa_deploy.runtime import Embedder

    embedder = Embedder.load(folder, precision, backend=backend, threads=threads)

    def run(pixels: np.ndarray) -> np.ndarray:
        return embedder.backend.run(pixels, ["embedding"])["embedding"]

    device = "cuda" if backend == "tensorrt" or "CUDA" in embedder.backend.describe() else "cpu"
    return Runner(f"ours: {embedder.backend.describe()} {precision}", "ours", precision, run,
                  f"ours:{backend}:{precision}", device, embedder.close)


def build(spec: str, folder: Path, manifest: Manifest, weights: Path | None, threads: int | None) -> Runner:
    kind, _, rest = spec.partition(":")
    if kind == "torch":
        return torch_runner(rest, weights, threads)
    if kind == "openvino-peer":
        precision, _, hint = rest.partition(":")
        return openvino_peer(folder, manifest, precision, hint, threads)
    if kind == "ours":
        backend, _, precision = rest.partition(":")
        return ours_runner(folder, backend, precision, threads)
    raise ValueError(f"unknown runner spec {spec!r}")
