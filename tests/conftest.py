"""Shared fixtures: Hugging Face checkpoints written by transformers itself (the oracle), real
photographs shipped inside scikit-image, and exported artifact folders reused across tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the Hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

SKIMAGE_PHOTOS = {
    "calib": ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
              "hubble_deep_field.jpg"],
    "eval": ["retina.jpg", "motorcycle_right.png", "camera.png", "ihc.png"],
}


def skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


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


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "ijepa_tiny")


@pytest.fixture(scope="session")
def hf_cls_dir(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "ijepa_tiny_cls", labels=7, seed=1)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photographs: a calibration folder and a disjoint held-out folder."""
    root = tmp_path_factory.mktemp("photos")
    out = {}
    for split, names in SKIMAGE_PHOTOS.items():
        (root / split).mkdir()
        for name in names:
            shutil.copy(skimage_data_dir() / name, root / split / name)
        out[split] = root / split
    return out


def export_tiny(checkpoint: Path, out: Path, **kwargs) -> Path:
    from ijepa_deploy.exporter.export import ExportOptions, export
    from ijepa_deploy.reference_model import load_checkpoint

    options = ExportOptions(output_dir=out, max_batch=kwargs.pop("max_batch", 4), **kwargs)
    return export(load_checkpoint(checkpoint), options)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, hf_dir, photos) -> Path:
    """fp32 + fp16 + int8 + int8-cpu artifacts of the tiny Hugging Face checkpoint."""
    return export_tiny(hf_dir, tmp_path_factory.mktemp("engines"), precisions=("fp32", "fp16", "int8", "int8-cpu"),
                       calib_images=photos["calib"], eval_images=photos["eval"])


@pytest.fixture(scope="session")
def tiny_cls_artifacts(tmp_path_factory, hf_cls_dir) -> Path:
    return export_tiny(hf_cls_dir, tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="session")
def vith14_artifacts(tmp_path_factory, photos) -> Path:
    """Real-size vith14 (random init): fp32 + fp16 + int8 + int8-cpu, batch 1-2 to bound CI time."""
    from ijepa_deploy.exporter.export import ExportOptions, export
    from ijepa_deploy.reference_model import load_checkpoint

    options = ExportOptions(precisions=("fp32", "fp16", "int8", "int8-cpu"), max_batch=2, output_dir=tmp_path_factory.mktemp("real"),
                            calib_images=photos["calib"], calib_count=4, eval_images=photos["eval"], eval_count=2)
    return export(load_checkpoint(variant="vith14", random_init=True, seed=0), options)
