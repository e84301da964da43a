"""Preprocessing canons: the two ways I-JEPA checkpoints are fed, named, so an artifact records which.

- `hf`: what Hugging Face's conversion script saved with every Hub checkpoint (`ViTImageProcessor`):
  bilinear resize straight to height x width (the aspect ratio is not kept), x / 255, mean = std = 0.5.
  Parity with `transformers` means this canon.
- `imagenet`: what Meta trained the released checkpoints with (`facebookresearch/ijepa`,
  `src/transforms.py`: ImageNet mean/std) and what timm evaluates its `vit_*_gap_*_ijepa`
  configurations with: bicubic resize of the shorter side to floor(size / crop_pct), a center crop of
  height x width, x / 255, ImageNet mean/std. crop_pct is timm's `_cfg` default of 0.9 (224 -> 248 ->
  224), and 1.0 for the 448 px ViT-H/16 (its pretrained cfg says `crop_pct=1.0`).
- `custom`: anything else (a processor config with other values).

Every real I-JEPA checkpoint was trained with the `imagenet` canon; random weights have none.
"""

from __future__ import annotations

import dataclasses

from .errors import UsageError
from .manifest import Preprocessing

CANONS = ("hf", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HF_MEAN = HF_STD = (0.5, 0.5, 0.5)


def imagenet_crop_pct(image_size: int) -> float:
    """timm's eval crop_pct for the I-JEPA configs: 1.0 for the 448 px model, else `_cfg`'s 0.9."""
    return 1.0 if image_size >= 448 else 0.9


def canon_preprocessing(canon: str, height: int, width: int, native_size: int | None = None) -> Preprocessing:
    """The Preprocessing record of `canon` at height x width (`native_size` picks imagenet's crop_pct)."""
    if canon == "hf":
        return Preprocessing(height, width, resample="bilinear", mean=HF_MEAN, std=HF_STD, crop_pct=None, canon="hf")
    if canon == "imagenet":
        return Preprocessing(height, width, resample="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                             crop_pct=imagenet_crop_pct(native_size or max(height, width)), canon="imagenet")
    raise UsageError(f"unknown preprocessing canon {canon!r}; choose from {', '.join(CANONS)}")


def classify(pre: Preprocessing) -> str:
    """Which canon a Preprocessing record is (its own `canon` field aside): hf, imagenet or custom."""
    for canon in CANONS:
        reference = canon_preprocessing(canon, pre.height, pre.width)
        same = (pre.resample == reference.resample and _close(pre.mean, reference.mean)
                and _close(pre.std, reference.std) and abs(pre.rescale_factor - 1 / 255) < 1e-9
                and (pre.crop_pct is None) == (reference.crop_pct is None))
        if same:
            return canon
    return "custom"


def with_canon_name(pre: Preprocessing) -> Preprocessing:
    """`pre` with its `canon` field saying what it is."""
    return dataclasses.replace(pre, canon=classify(pre))


def training_canon(checkpoint_kind: str) -> str | None:
    """The canon a checkpoint's weights were trained with: imagenet for every real I-JEPA checkpoint."""
    return None if checkpoint_kind == "random-init" else "imagenet"


def training_note(checkpoint_kind: str, pre: Preprocessing) -> str | None:
    """One sentence when an artifact's preprocessing is not the canon its weights were trained with."""
    trained = training_canon(checkpoint_kind)
    if trained is None or pre.canon == trained:
        return None
    return (f"the weights were trained with the {trained} canon (ImageNet mean/std, bicubic resize of the shorter "
            f"side, center crop), but this artifact's preprocessing is the {pre.canon} canon (mean {list(pre.mean)}, "
            f"std {list(pre.std)}, {pre.resample}" + (", squashed to the input size" if pre.crop_pct is None else "")
            + f"); export with --preprocessing {trained} to embed inputs from the training distribution")


def _close(a, b) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-6 for x, y in zip(a, b))
