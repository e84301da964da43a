"""The resize step of both preprocessing canons, on PIL images or on a host's own (H, W, 3) pixels.

`crop_pct` None (the `hf` canon, Hugging Face's ViTImageProcessor): resize straight to height x width.
`crop_pct` set (the `imagenet` canon, timm's eval transform): keep the aspect ratio, resize, then
center-crop height x width, with torchvision's exact integer rules:

- square target S: the shorter side becomes floor(S / crop_pct) and the longer one
  int(short_new * long / short) (torchvision's `_compute_resized_output_size`);
- non-square target H x W (a dynamic artifact embedded at another resolution): timm's
  `ResizeKeepRatio` for (floor(H / crop_pct), floor(W / crop_pct)): the image is scaled by the smallest
  factor that covers both, each side round(side / ratio); the manifest's resample is used (timm's
  factory leaves that one transform at its bilinear default; we keep the artifact's one filter);
- crop offsets int(round((resized - target) / 2)) (Python's round, half to even, as torchvision's
  `center_crop`); an image already at the resized size is not resampled (as torchvision skips it).

Zero copy: a C-contiguous (H, W, 3) uint8 array that needs no resampling is only sliced (a view of the
caller's memory reaches the normalisation); one that does is handed to PIL as is (`Image.fromarray`
wraps C-contiguous memory; PIL unpacks RGB rows into its own 4-byte working layout inside the resize,
in C). A non-contiguous view (every other column, a channel-reversed BGR view, a crop of a larger
frame) is made contiguous first: exactly one copy.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ijepa_deploy.contract.manifest import Preprocessing

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def resized_size(width: int, height: int, target: tuple[int, int], crop_pct: float | None) -> tuple[int, int]:
    """(width, height) an image of `width` x `height` is resampled to before the crop."""
    th, tw = target
    if crop_pct is None:
        return tw, th
    if th == tw:
        requested = math.floor(th / crop_pct)
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = requested, int(requested * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)
    sh, sw = math.floor(th / crop_pct), math.floor(tw / crop_pct)
    ratio = min(height / sh, width / sw)
    return round(width / ratio), round(height / ratio)


def crop_box(width: int, height: int, target: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centered target crop of a `width` x `height` image."""
    th, tw = target
    return int(round((height - th) / 2.0)), int(round((width - tw) / 2.0))


def resize_rgb(image: Image.Image | np.ndarray, spec: Preprocessing, target: tuple[int, int]) -> np.ndarray:
    """An RGB PIL image or (H, W, 3) uint8 array -> (target_h, target_w, 3) uint8, by `spec`'s canon.
    The result is a view of `image` when nothing had to be resampled."""
    if isinstance(image, np.ndarray):
        height, width = image.shape[:2]
    else:
        width, height = image.size
    size = resized_size(width, height, target, spec.crop_pct)
    if size != (width, height):
        if isinstance(image, np.ndarray):
            image = Image.fromarray(np.ascontiguousarray(image))  # one copy only for a non-contiguous view
        image = image.resize(size, resample=RESAMPLE[spec.resample])
    pixels = np.asarray(image, dtype=np.uint8)
    top, left = crop_box(size[0], size[1], target)
    return pixels[top:top + target[0], left:left + target[1]]
