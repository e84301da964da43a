"""Image preprocessing driven by the manifest, identical to Hugging Face's ViTImageProcessor.

decode -> RGB (transparency composited onto white, as transformers' convert_to_rgb does) ->
resize straight to (height, width) with PIL -> x * rescale -> (x - mean) / std -> NCHW float32.
The normalisation is one fused multiply-add over the whole uint8 batch.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import Executor
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


class ImageError(ValueError):
    """An input could not be read as an image."""


def describe(image: ImageInput, index: int | None = None) -> str:
    """A short name for an input, for error messages and output listings."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    where = f"input #{index}" if index is not None else "input"
    if isinstance(image, bytes):
        return f"{where} ({len(image)} bytes)"
    if isinstance(image, np.ndarray):
        return f"{where} (array {image.shape} {image.dtype})"
    return f"{where} ({type(image).__name__})"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB the way transformers' convert_to_rgb does."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode(image: ImageInput, index: int | None = None) -> Image.Image:
    """Open a path, encoded bytes, a PIL image or an HxW[xC] uint8 array as an RGB PIL image."""
    try:
        if isinstance(image, Image.Image):
            pil = image
        elif isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
                raise ImageError(f"{describe(image, index)}: arrays must be HxW, HxWx3 or HxWx4 uint8")
            pil = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
        elif isinstance(image, (bytes, bytearray)):
            pil = Image.open(io.BytesIO(image))
            pil.load()
        elif isinstance(image, (str, os.PathLike)):
            with Image.open(image) as f:
                f.load()
                return to_rgb(f) if f.mode != "RGB" else f.copy()
        else:
            raise ImageError(f"{describe(image, index)}: unsupported input type {type(image).__name__}")
        return to_rgb(pil)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"image not found: {describe(image, index)}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot read image {describe(image, index)}: {exc}; the file is corrupt, truncated "
                         "or not an image") from None


class Preprocessor:
    """Turns images into the model's input tensor, exactly as the manifest's spec says."""

    def __init__(self, spec: dict, size: tuple[int, int] | None = None):
        self.height, self.width = size or (int(spec["height"]), int(spec["width"]))
        self.resample = _RESAMPLE[spec.get("resample", "bilinear")]
        mean = np.asarray(spec["mean"], dtype=np.float64)
        std = np.asarray(spec["std"], dtype=np.float64)
        rescale = float(spec["rescale_factor"])
        # (x * rescale - mean) / std == x * scale + offset, per channel
        self._scale = (rescale / std).astype(np.float32)
        self._offset = (-mean / std).astype(np.float32)

    def resize(self, image: ImageInput, index: int | None = None) -> np.ndarray:
        """Decode, convert and resize one image: (H, W, 3) uint8."""
        pil = decode(image, index)
        if pil.size != (self.width, self.height):
            pil = pil.resize((self.width, self.height), resample=self.resample)
        return np.asarray(pil, dtype=np.uint8)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 normalized."""
        out = np.empty((batch.shape[0], 3, self.height, self.width), dtype=np.float32)
        chw = batch.transpose(0, 3, 1, 2)
        np.multiply(chw, self._scale[None, :, None, None], out=out, casting="unsafe")
        out += self._offset[None, :, None, None]
        return out

    def __call__(self, images: Sequence[ImageInput], executor: Executor | None = None,
                 start_index: int = 0) -> np.ndarray:
        """Preprocess a batch; decoding/resizing runs on `executor` when given (PIL releases the GIL)."""
        indices = range(start_index, start_index + len(images))
        if executor is None:
            arrays = [self.resize(img, i) for img, i in zip(images, indices)]
        else:
            arrays = list(executor.map(self.resize, images, indices))
        return self.normalize(np.stack(arrays))


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted). Missing paths raise ImageError."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"folder {path} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise ImageError(f"image not found: {path}")
    return out
