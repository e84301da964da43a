"""Preprocessing canons against their oracles, and how an export picks and records one.

Oracles:
- `hf`: transformers' ViTImageProcessor (bilinear squash, mean = std = 0.5), the library itself.
- `imagenet`: timm's eval transform for `vit_huge_patch14_gap_224.in1k_ijepa`
  (`timm.data.create_transform(**timm.data.resolve_data_config(model=m))`; `_cfg` defaults crop_pct 0.9,
  bicubic, ImageNet mean/std from the pretrained cfg). timm itself cannot run here: it imports
  torchvision, and torchvision 0.28.0 (the registry wheel next to torch 2.13.0+cpu) fails to import
  against our pinned CPU torch (`RuntimeError: operator torchvision::nms does not exist`, tried in a
  throwaway venv). So the transform is reproduced below from timm's and torchvision's source:
  `transforms_imagenet_eval` (scale_size = floor(224 / crop_pct); square target -> `Resize(scale_size)`,
  non-square -> `ResizeKeepRatio(scale_size)`; then `CenterCrop`), torchvision's
  `_compute_resized_output_size` (int(size * long / short)), its PIL `resize` (skipped when the size is
  unchanged), `center_crop`'s int(round((h - ch) / 2.)) and `to_tensor` + `normalize` done with torch in
  float32 as torchvision does.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ijepa_deploy.runtime as runtime_package
from ijepa_deploy.contract.canons import IMAGENET_MEAN, IMAGENET_STD, canon_preprocessing
from ijepa_deploy.contract.errors import ManifestError
from ijepa_deploy.contract.manifest import Preprocessing
from ijepa_deploy.runtime import Embedder, Manifest, Preprocessor

from .helpers import export_tiny, make_original_checkpoint, run_module, skimage_data_dir

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "camera.png"]
# (width, height) crops: square, landscape, portrait, very wide, smaller than the target (upsampled), and
# two whose crop offset is x.5 (248 * 201 / 200 -> 249: offset 12.5 rounds to 12; 251: 13.5 rounds to 14)
CROPS = [(300, 300), (451, 300), (300, 451), (500, 120), (100, 60), (200, 201), (203, 200)]


def _photos() -> list[Image.Image]:
    images = [Image.open(skimage_data_dir() / name).convert("RGB") for name in PHOTOS]
    base = images[0]
    return images + [base.crop((7, 11, 7 + w, 11 + h)) for w, h in CROPS]


def _to_tensor_normalize(img: Image.Image, mean, std) -> np.ndarray:
    """torchvision's to_tensor (uint8 -> float32 / 255, CHW) and normalize ((x - mean) / std in float32)."""
    x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    x = x.to(dtype=torch.float32).div(255)
    return x.sub_(torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)).div_(
        torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)).numpy()


def timm_eval(img: Image.Image, size: tuple[int, int], crop_pct: float = 0.9) -> np.ndarray:
    """timm's transforms_imagenet_eval (crop_mode center) for an ijepa config, from source (see module doc)."""
    th, tw = size
    scale_h, scale_w = math.floor(th / crop_pct), math.floor(tw / crop_pct)
    w, h = img.size
    if scale_h == scale_w:  # transforms.Resize(scale_size[0]): torchvision's shorter-side rule
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = scale_h, int(scale_h * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    else:  # ResizeKeepRatio(scale_size).get_params with longest=0
        ratio = min(h / scale_h, w / scale_w)
        new_h, new_w = round(h / ratio), round(w / ratio)
    if (new_h, new_w) != (h, w):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = int(round((new_h - th) / 2.0)), int(round((new_w - tw) / 2.0))
    img = img.crop((left, top, left + tw, top + th))
    return _to_tensor_normalize(img, IMAGENET_MEAN, IMAGENET_STD)


def _worst(pre: Preprocessor, oracle) -> float:
    worst = 0.0
    for img in _photos():
        got = pre([img])[0]
        want = oracle(img)
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def test_imagenet_canon_matches_timm_eval_transform():
    spec = canon_preprocessing("imagenet", 224, 224, native_size=224)
    assert (spec.crop_pct, spec.resample, spec.mean, spec.std) == (0.9, "bicubic", IMAGENET_MEAN, IMAGENET_STD)
    worst = _worst(Preprocessor(spec), lambda img: timm_eval(img, (224, 224)))
    print(f"imagenet canon vs timm eval transform: max abs {worst:.2e}")
    assert worst <= 1e-5


def test_imagenet_canon_448_model_uses_crop_pct_one():
    """timm's vit_huge_patch16_gap_448.in1k_ijepa cfg sets crop_pct=1.0: shorter side 448, crop 448."""
    spec = canon_preprocessing("imagenet", 448, 448, native_size=448)
    assert spec.crop_pct == 1.0
    assert _worst(Preprocessor(spec), lambda img: timm_eval(img, (448, 448), 1.0)) <= 1e-5


def test_imagenet_canon_non_square_target_follows_resize_keep_ratio():
    """A dynamic artifact embedded at 224x336: timm's ResizeKeepRatio geometry, the artifact's bicubic."""
    spec = canon_preprocessing("imagenet", 224, 224, native_size=224)
    worst = _worst(Preprocessor(spec, (224, 336)), lambda img: timm_eval(img, (224, 336)))
    assert worst <= 1e-5


def test_hf_canon_matches_vit_image_processor():
    from transformers import ViTImageProcessorPil

    spec = canon_preprocessing("hf", 224, 224)
    theirs = ViTImageProcessorPil(size={"height": 224, "width": 224}, resample=2, image_mean=[0.5] * 3,
                                  image_std=[0.5] * 3)
    worst = _worst(Preprocessor(spec), lambda img: theirs(images=img, return_tensors="np")["pixel_values"][0])
    print(f"hf canon vs ViTImageProcessor: max abs {worst:.2e}")
    assert worst <= 1e-5


def test_the_schema_carries_the_canon():
    base = {"height": 56, "width": 56, "resample": "bicubic", "rescale_factor": 1 / 255, "mean": [0.5] * 3,
            "std": [0.5] * 3, "channel_order": "RGB", "layout": "NCHW", "exif_orientation": True,
            "max_pixels": 10, "crop_pct": 0.9}
    for bad in ({**base}, {**base, "canon": "timm"}, {**base, "canon": "imagenet", "crop_pct": 1.5}):
        with pytest.raises(ManifestError):
            Preprocessing.from_dict(bad)
    assert Preprocessing.from_dict({**base, "canon": "imagenet"}).crop_pct == 0.9


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_original_checkpoint_defaults_to_the_imagenet_canon(hf_dir, tmp_path):
    original = make_original_checkpoint(hf_dir, tmp_path / "IN1K-vit.tiny.14-300e.pth.tar")
    from ijepa_deploy.exporter import ExportOptions, export
    from ijepa_deploy.reference_model import load_checkpoint

    folder = export(load_checkpoint(original, variant="test-tiny-p14"),
                    ExportOptions(output_dir=tmp_path / "engines", max_batch=2))
    pre = Manifest.load(folder).preprocessing
    assert (pre.canon, pre.crop_pct, pre.resample, pre.mean, pre.std) == ("imagenet", 0.9, "bicubic", IMAGENET_MEAN,
                                                                          IMAGENET_STD)
    assert "Preprocessing note" not in (folder / "report.md").read_text()
    with Embedder.load(folder, backend="onnxruntime") as embedder:  # the runtime applies it exactly
        img = _photos()[1]
        assert np.abs(embedder.preprocess([img])[0] - timm_eval(img, (56, 56))).max() <= 1e-5


def test_hf_folder_keeps_its_processor_and_the_report_says_it_differs(tiny_fp32):
    data = json.loads((tiny_fp32 / "manifest.json").read_text())["preprocessing"]
    assert data["canon"] == "hf" and "crop_pct" not in data  # the manifest of an hf artifact is as before
    report = (tiny_fp32 / "report.md").read_text()
    assert "**Preprocessing note**: the weights were trained with the imagenet canon" in report
    assert "--preprocessing imagenet" in report


def test_cli_preprocessing_imagenet_changes_the_manifest_not_the_onnx(hf_dir, tiny_fp32, tmp_path):
    done = run_module("export", "--checkpoint", str(hf_dir), "--preprocessing", "imagenet", "--max-batch", "4",
                      "--output-dir", str(tmp_path), "--name", "tiny_imagenet", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "tiny_imagenet"
    imagenet, hf = Manifest.load(folder), Manifest.load(tiny_fp32)
    assert imagenet.preprocessing.canon == "imagenet" and imagenet.preprocessing.crop_pct == 0.9
    assert _sha(folder / "model_fp32.onnx") == _sha(tiny_fp32 / "model_fp32.onnx")  # same graph bytes
    assert imagenet.artifact("fp32").identity != hf.artifact("fp32").identity  # other vectors, other identity
    assert "Preprocessing note" not in (folder / "report.md").read_text()


def test_triton_preprocessing_model_carries_the_canon(hf_dir, tmp_path):
    from ijepa_deploy.exporter.triton_repo import write_triton_repo

    folder = export_tiny(hf_dir, tmp_path / "engines", preprocessing="imagenet")
    repo = write_triton_repo(folder, tmp_path / "repo")
    version = next(repo.glob("*_preprocess")) / "1"
    assert json.loads((version / "preprocessing.json").read_text())["canon"] == "imagenet"
    vendored = version / "ijepa_deploy" / "runtime"
    ours = Path(runtime_package.__file__).parent
    for name in ("resize.py", "preprocessing.py", "host_arrays.py"):  # the same code as the runtime's
        assert (vendored / name).read_text() == (ours / name).read_text()
