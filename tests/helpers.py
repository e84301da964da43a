"""What tests share besides fixtures: checkpoints written by transformers itself (the oracle), running
the CLIs as a user does, and the one-line error check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ijepa_deploy.bench.datasets import skimage_data_dir  # noqa: F401  (re-exported for tests)

CLI = {"export": "ijepa_deploy.cli.export", "embed": "ijepa_deploy.cli.embed", "index": "ijepa_deploy.cli.index",
       "bench": "ijepa_deploy.cli.bench"}


def make_hf_checkpoint(folder: Path, *, hidden=64, layers=2, heads=4, mlp=128, image=56, patch=14, labels=0,
                       seed=0) -> Path:
    """A seeded random I-JEPA written by transformers' save_pretrained (plus its processor config)."""
    import torch
    from transformers import IJepaConfig, IJepaForImageClassification, IJepaModel, ViTImageProcessorPil

    torch.manual_seed(seed)
    config = IJepaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=mlp, image_size=image, patch_size=patch, layer_norm_eps=1e-6)
    if labels:
        config.id2label = {i: f"class_{i}" for i in range(labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
        model = IJepaForImageClassification(config)
    else:
        model = IJepaModel(config)
    model.eval().save_pretrained(folder)
    ViTImageProcessorPil(size={"height": image, "width": image}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                         resample=2).save_pretrained(folder)
    return folder


def free_core_ratio(repeats: int = 3) -> float:
    """What this (shared) machine gives two GIL-free threads right now: 2 * t(one) / t(two) for sha256 over
    32 MB (hashlib releases the GIL on large data), best of `repeats`. About 2.0 with two free cores."""
    import hashlib

    data = bytes(32 << 20)

    def seconds(n: int) -> float:
        return threads_seconds(hashlib.sha256, [(data,)] * n)

    return 2 * min(seconds(1) for _ in range(repeats)) / min(seconds(2) for _ in range(repeats))


def threads_seconds(target, args_per_thread: list) -> float:
    """Wall seconds for one thread per entry of `args_per_thread`, all running `target` at once."""
    import threading
    import time

    threads = [threading.Thread(target=target, args=args) for args in args_per_thread]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def run_module(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -m module args` with captured text output (the CLIs as a user runs them); `module` may be a
    CLI's short name (export, embed, index, bench)."""
    return subprocess.run([sys.executable, "-m", CLI.get(module, module), *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **kwargs.pop("env", {})}, **kwargs)


def one_error_line(out: subprocess.CompletedProcess, code: int = 1) -> str:
    """Assert a CLI failed the way users should see it: exit `code`, one `error:` line, no traceback."""
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr and "unexpected" not in out.stderr, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-2000:]
    return errors[0]


def export_tiny(checkpoint: Path, out: Path, **kwargs) -> Path:
    from ijepa_deploy.exporter import ExportOptions, export
    from ijepa_deploy.reference_model import load_checkpoint

    options = ExportOptions(output_dir=out, max_batch=kwargs.pop("max_batch", 4), **kwargs)
    return export(load_checkpoint(checkpoint), options)


def rewrite_manifest(folder: Path, change, *, fix_identities: bool = True) -> None:
    """Edit `folder/manifest.json` in place; by default also recompute every artifact's identity, as a
    thorough attacker would, so that what is tested is the defence behind the identity check."""
    import json

    from ijepa_deploy.contract.identity import artifact_identity
    from ijepa_deploy.contract.manifest import Manifest
    from ijepa_deploy.contract.records import load_record

    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    if fix_identities:
        manifest = load_record(Manifest, data)
        for key, art in manifest.artifacts.items():
            data["artifacts"][key]["identity"] = artifact_identity(manifest, art)
    (folder / "manifest.json").write_text(json.dumps(data))


def synthetic_collection(folder: Path, vectors, shard_size: int, identity: str = "sha256:" + "0" * 64) -> Path:
    """A collection folder holding `vectors` (N, D) as if embedded from inputs v0..vN-1 (for index tests
    that need many vectors without embedding them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ijepa_deploy.collection.inputs import _schema
    from ijepa_deploy.contract.integrity import sha256_file
    from ijepa_deploy.contract.manifest import FileRecord
    from ijepa_deploy.contract.naming import INPUTS_NAME
    from ijepa_deploy.contract.shards import JobRecord, Row, ShardStore, save_job

    n, dim = vectors.shape
    folder.mkdir(parents=True)
    rows = [{"index": i, "given": "generated", "path": f"v{i}", "member": None, "offset": None, "size": 1,
             "mtime_ns": 0, "error": None} for i in range(n)]
    pq.write_table(pa.Table.from_pylist(rows, _schema(pa)), folder / INPUTS_NAME)
    inputs = FileRecord(INPUTS_NAME, sha256_file(folder / INPUTS_NAME), (folder / INPUTS_NAME).stat().st_size)
    job = JobRecord("generated", "generated", identity, "fp32", "file", (1, 1), "float32", dim, shard_size, n, inputs)
    save_job(folder, job)
    store = ShardStore(folder, job)
    for k in range(store.shard_count):
        lo, hi = store.bounds(k)
        store.write(k, vectors[lo:hi], [Row(i, f"v{i}", 1, 1, "ok", None) for i in range(lo, hi)], store.inputs(k))
    return folder


def make_original_checkpoint(hf_dir: Path, path: Path) -> Path:
    """Synthesize a facebookresearch/ijepa .pth.tar from HF weights: module. prefixes, fused qkv,
    pos_embed etc.; target_encoder = a perturbed copy."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(hf_dir / "model.safetensors"))
    d = state["embeddings.position_embeddings"].shape[-1]
    enc = {"module.pos_embed": state["embeddings.position_embeddings"],
           "module.patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
           "module.patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
           "module.norm.weight": state["layernorm.weight"], "module.norm.bias": state["layernorm.bias"]}
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            enc[f"module.blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [state[f"{p}attention.attention.{n}.{kind}"] for n in ("query", "key", "value")])
            enc[f"module.blocks.{i}.attn.proj.{kind}"] = state[f"{p}attention.output.dense.{kind}"]
            enc[f"module.blocks.{i}.norm1.{kind}"] = state[f"{p}layernorm_before.{kind}"]
            enc[f"module.blocks.{i}.norm2.{kind}"] = state[f"{p}layernorm_after.{kind}"]
            enc[f"module.blocks.{i}.mlp.fc1.{kind}"] = state[f"{p}intermediate.dense.{kind}"]
            enc[f"module.blocks.{i}.mlp.fc2.{kind}"] = state[f"{p}output.dense.{kind}"]
    assert enc["module.blocks.0.attn.qkv.weight"].shape[0] == 3 * d
    target = {k: v + 0.05 * torch.randn_like(v) for k, v in enc.items()}
    torch.save({"encoder": enc, "target_encoder": target, "predictor": {"module.x": torch.zeros(1)},
                "opt": {}, "scaler": None, "epoch": 300, "loss": 0.1, "batch_size": 2048, "lr": 0.001}, path)
    return path


# --------------------------------------------------------------------------- runtime tests
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "logo.png"]
MODES = ["RGB", "L", "LA", "P", "PA", "RGBA", "CMYK", "I;16", "I", "F", "1"]


def cpu_backends() -> list:
    """onnxruntime, and openvino where it is installed (a skip saying why otherwise)."""
    import pytest

    from ijepa_deploy.runtime.backends.openvino_backend import openvino_unavailable_reason

    reason = openvino_unavailable_reason()
    return ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(reason is not None,
                                                                            reason=f"OpenVINO backend: {reason}"))]


def hf_processor(manifest, size=None):
    """transformers' ViTImageProcessor (PIL backend) with an artifact's preprocessing: the parity oracle."""
    from transformers import ViTImageProcessorPil

    pre = manifest.preprocessing
    h, w = size or (pre.height, pre.width)
    return ViTImageProcessorPil(size={"height": h, "width": w}, resample=2, do_rescale=True,
                                rescale_factor=pre.rescale_factor, image_mean=list(pre.mean), image_std=list(pre.std),
                                do_convert_rgb=True)


def image_in_mode(name: str, mode: str):
    """A scikit-image photograph converted to a PIL mode (P from RGB, I;16 from L, as PIL allows)."""
    from PIL import Image

    img = Image.open(skimage_data_dir() / name)
    if mode == "P" and img.mode == "RGBA":
        return img.convert("RGB").convert("P")
    if mode == "I;16":
        return img.convert("L").convert("I;16")
    return img.convert(mode)


def embed_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return run_module("embed", *args, **kwargs)


def copy_folder(folder: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target
