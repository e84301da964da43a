"""Shared fixtures, each sized to what its tests need: Hugging Face checkpoints written by transformers
itself (the oracle), real photographs shipped inside scikit-image (18 held-out, calibration crops of six
others), and exported artifact folders reused across tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ijepa_deploy.bench.datasets import write_photos

from .helpers import export_tiny, make_hf_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the Hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


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


@pytest.fixture(scope="session")
def tiny_fp32(tmp_path_factory, hf_dir) -> Path:
    """The tiny Hugging Face checkpoint exported to fp32 only: what runtime and collection tests need."""
    return export_tiny(hf_dir, tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="session")
def mid_fp32(tmp_path_factory) -> Path:
    """A mid-sized model (D=192, 4 blocks, 224 px, patch 16) whose inference costs about as much as decoding
    a photo, like the real ones: for measurements of parallelism (the tiny one is all overhead)."""
    hf = make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "ijepa_mid", hidden=192, layers=4, heads=3, mlp=768,
                            image=224, patch=16)
    return export_tiny(hf, tmp_path_factory.mktemp("engines"), max_batch=4)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, hf_dir, photos) -> Path:
    """fp32 + fp16 + int8 + int8-cpu + fp8 artifacts of the tiny Hugging Face checkpoint (precision tests)."""
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
    from ijepa_deploy.exporter import ExportOptions, export
    from ijepa_deploy.reference_model import load_checkpoint

    options = ExportOptions(precisions=("fp32", "fp16", "int8", "int8-cpu"), max_batch=2,
                            output_dir=tmp_path_factory.mktemp("real"), calib_images=photos["calib"], calib_count=4,
                            eval_images=photos["eval"], eval_count=4)
    return export(load_checkpoint(variant="vith14", random_init=True, seed=0), options)
