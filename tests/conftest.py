"""Shared fixtures: Hugging Face checkpoints written by transformers itself (the oracle), real
photographs shipped inside scikit-image (18 held-out, calibration crops of six others), outlier
checkpoints, and exported artifact folders reused across tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .datasets import STRENGTHS, make_outlier_checkpoint, skimage_data_dir, write_photos  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the Hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


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


def run_module(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -m module args` with captured text output (the CLIs as a user runs them)."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **kwargs.pop("env", {})}, **kwargs)


def one_error_line(out: subprocess.CompletedProcess, code: int = 1) -> str:
    """Assert a CLI failed the way users should see it: exit `code`, one `error:` line, no traceback."""
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr and "unexpected" not in out.stderr, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "ijepa_tiny")


@pytest.fixture(scope="session")
def hf_cls_dir(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "ijepa_tiny_cls", labels=7, seed=1)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photographs: `calib` (24 crops of six photos) and `eval` (18 other, whole photos)."""
    return write_photos(tmp_path_factory.mktemp("photos"))


def export_tiny(checkpoint: Path, out: Path, **kwargs) -> Path:
    from ijepa_deploy.exporter.export import ExportOptions, export
    from ijepa_deploy.reference_model import load_checkpoint

    options = ExportOptions(output_dir=out, max_batch=kwargs.pop("max_batch", 4), **kwargs)
    return export(load_checkpoint(checkpoint), options)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, hf_dir, photos) -> Path:
    """fp32 + fp16 + int8 + int8-cpu + fp8 artifacts of the tiny Hugging Face checkpoint."""
    return export_tiny(hf_dir, tmp_path_factory.mktemp("engines"),
                       precisions=("fp32", "fp16", "int8", "int8-cpu", "fp8"),
                       calib_images=photos["calib"], eval_images=photos["eval"])


@pytest.fixture(scope="session")
def tiny_cls_artifacts(tmp_path_factory, hf_cls_dir) -> Path:
    return export_tiny(hf_cls_dir, tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="session")
def vith14_artifacts(tmp_path_factory, photos) -> Path:
    """Real-size vith14 (random init): fp32 + fp16 + int8 + int8-cpu, batch 1-2 to bound CI time. (fp8 is
    refused on random ViT-H weights, centered cosine 0.92: E4M3 noise over 32 blocks; the tiny and outlier
    models cover it.)"""
    from ijepa_deploy.exporter.export import ExportOptions, export
    from ijepa_deploy.reference_model import load_checkpoint

    options = ExportOptions(precisions=("fp32", "fp16", "int8", "int8-cpu"), max_batch=2,
                            output_dir=tmp_path_factory.mktemp("real"), calib_images=photos["calib"], calib_count=4,
                            eval_images=photos["eval"], eval_count=4)
    return export(load_checkpoint(variant="vith14", random_init=True, seed=0), options)
