"""Image preprocessing driven by the manifest: Hugging Face's load_image + ViTImageProcessor (the `hf`
canon) or timm's eval transform (the `imagenet` canon), exactly.

decode (regular files only, pixel limit checked before decoding) -> EXIF orientation applied (as
`transformers.image_utils.load_image` does) -> RGB (transparency composited onto white, as
transformers' convert_to_rgb does) -> resize (and center-crop for `imagenet`; see resize.py) ->
x * rescale -> (x - mean) / std -> NCHW float32. Each image is resized and normalised on a worker
thread straight into its row of the batch (numpy and PIL release the GIL there; no stacked copy).
A host's (H, W, 3) uint8 pixels (arrays, buffers, DLPack; see host_arrays.py) skip decoding and are
never copied before the resize.
"""

from __future__ import annotations

import io
import os
import stat
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ijepa_deploy.contract.errors import ImageError, PixelLimitError, UsageError, UserError
from ijepa_deploy.contract.manifest import Preprocessing

from .host_arrays import host_array
from .resize import RESAMPLE, resize_rgb

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray, memoryview]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_ORIENTATION = 0x0112
SINGLE_IMAGE_TYPES = (str, bytes, bytearray, os.PathLike, Image.Image)


def parse_size(text: str, *, allow_dynamic: bool = False, what: str = "--resolution") -> tuple[int, int] | None:
    """'HxW' or 'S' -> (H, W) of positive integers; 'dynamic' -> None when allowed."""
    cleaned = str(text).strip().lower()
    if allow_dynamic and cleaned == "dynamic":
        return None
    example = "'dynamic' or HxW like 224x224" if allow_dynamic else "HxW like 448x448"
    try:
        parts = [int(p) for p in cleaned.split("x")]
    except ValueError:
        raise UsageError(f"{what} must be {example}, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0 or max(parts) > 16384:
        raise UsageError(f"{what} must be {example} (1..16384 pixels), got {text!r}")
    return parts[0], parts[1]


def describe(image: ImageInput, index: int | None = None) -> str:
    """A short name for an input, for error messages and output listings."""
    if isinstance(image, (str, os.PathLike)) or callable(getattr(image, "read_bytes", None)):
        return str(image)
    where = f"input #{index}" if index is not None else "input"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"{where} ({len(image)} bytes)" if not isinstance(image, memoryview) else f"{where} (memoryview)"
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


def read_regular_file(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of a regular file. FIFOs, devices and folders are refused without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except OSError as exc:
        raise ImageError(f"cannot open image {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{path} is not a regular file; only image files are read")
        if limit is not None and st.st_size > limit:
            raise ImageError(f"{path} has {st.st_size} bytes, over the {limit}-byte limit for one image")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            return fh.read()
    finally:
        if fd >= 0:
            os.close(fd)


def _open_checked(data: bytes | bytearray | memoryview, name: str, max_pixels: int) -> Image.Image:
    """Open encoded bytes, refuse images over `max_pixels` before decoding them, then decode."""
    pil = Image.open(io.BytesIO(data))  # reads the header only
    width, height = pil.size
    if width * height > max_pixels:
        raise PixelLimitError(f"{name} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                         "(a decompression bomb, or raise max_pixels)")
    pil.load()
    return pil


def check_array(image: np.ndarray, name: str, max_pixels: int) -> None:
    """An image array must be H x W, H x W x 1, H x W x 3 or H x W x 4 uint8 within the pixel limit."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{name}: arrays must be HxW, HxWx3 or HxWx4 uint8 (or NxHxWx3 for a batch)")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise PixelLimitError(f"{name} has more than {max_pixels} pixels")


def decode(image: ImageInput, index: int | None = None, *, exif_orientation: bool = True,
           max_pixels: int = Preprocessing.max_pixels) -> Image.Image:
    """Open a path, encoded bytes, a PIL image or an HxW[xC] uint8 array (or buffer, or DLPack tensor)
    as an upright RGB PIL image."""
    name = describe(image, index)
    try:
        array = host_array(image)
        if isinstance(image, Image.Image):
            pil = image
        elif array is not None:
            check_array(array, name, max_pixels)
            return to_rgb(Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array))
        elif isinstance(image, (bytes, bytearray, memoryview)):  # encoded image bytes
            pil = _open_checked(image, name, max_pixels)
        elif isinstance(image, (str, os.PathLike)):
            pil = _open_checked(read_regular_file(image), name, max_pixels)
        elif callable(getattr(image, "read_bytes", None)):  # a lazy source, such as a tar shard member
            pil = _open_checked(image.read_bytes(), name, max_pixels)
        else:
            raise ImageError(f"{name}: unsupported input type {type(image).__name__}; pass paths, bytes, PIL images "
                             "or uint8 arrays")
        if exif_orientation and pil.getexif().get(_ORIENTATION, 1) != 1:
            pil = ImageOps.exif_transpose(pil)
        return to_rgb(pil)
    except UserError:
        raise
    except Image.DecompressionBombError as exc:
        raise PixelLimitError(f"{name} was refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
            ZeroDivisionError, MemoryError) as exc:  # what PIL's decoders raise on hostile input
        raise ImageError(f"cannot read image {name}: {type(exc).__name__}: {str(exc)[:200]}; the file is corrupt, "
                         "truncated or not an image") from None


class Preprocessor:
    """Turns images into the model's input tensor, exactly as the manifest's spec says."""

    def __init__(self, spec: Preprocessing | dict, size: tuple[int, int] | None = None):
        if isinstance(spec, dict):
            spec = Preprocessing.from_dict(spec)
        self.spec = spec
        self.height, self.width = size or (spec.height, spec.width)
        self.resample = RESAMPLE[spec.resample]
        mean = np.asarray(spec.mean, dtype=np.float64)
        std = np.asarray(spec.std, dtype=np.float64)
        # (x * rescale - mean) / std == x * scale + offset, per channel
        self._scale = (spec.rescale_factor / std).astype(np.float32)
        self._offset = (-mean / std).astype(np.float32)

    def decode(self, image: ImageInput, index: int | None = None) -> Image.Image:
        return decode(image, index, exif_orientation=self.spec.exif_orientation, max_pixels=self.spec.max_pixels)

    def load(self, image: ImageInput, index: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """Decode, orient, convert, resize (and crop) one image: (H, W, 3) uint8 and its (width, height)
        before resizing. A host's (H, W, 3) uint8 pixels skip decoding and are never copied before the
        resize; the result is a view of them when they needed no resampling."""
        array = host_array(image)
        if array is not None and array.ndim == 3 and array.dtype == np.uint8 and array.shape[2] == 3:
            check_array(array, describe(image, index), self.spec.max_pixels)
            return resize_rgb(array, self.spec, (self.height, self.width)), (array.shape[1], array.shape[0])
        pil = self.decode(image, index)
        return resize_rgb(pil, self.spec, (self.height, self.width)), pil.size

    def resize(self, image: ImageInput, index: int | None = None) -> np.ndarray:
        """Decode, orient, convert and resize one image: (H, W, 3) uint8."""
        return self.load(image, index)[0]

    def normalize_into(self, out: np.ndarray, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> `out` (3, H, W) float32, normalised in place (two numpy calls, GIL released)."""
        np.multiply(image.transpose(2, 0, 1), self._scale[:, None, None], out=out, casting="unsafe")
        out += self._offset[:, None, None]
        return out

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 normalized."""
        out = np.empty((batch.shape[0], 3, self.height, self.width), dtype=np.float32)
        chw = batch.transpose(0, 3, 1, 2)
        np.multiply(chw, self._scale[None, :, None, None], out=out, casting="unsafe")
        out += self._offset[None, :, None, None]
        return out

    def prepare(self, images: Sequence[ImageInput], executor: Executor | None = None, start_index: int = 0,
                skip_bad: bool = False) -> "PreparedBatch":
        """Preprocess a batch, keeping per-image sizes; with `skip_bad`, unreadable images are recorded
        with their error instead of failing the batch. Each image is decoded, resized and normalised
        into its row of the batch on `executor` when given."""
        images = list(images)
        pixels = np.empty((len(images), 3, self.height, self.width), dtype=np.float32)

        def one(i: int):
            try:
                array, size = self.load(images[i], start_index + i)
            except ImageError as exc:
                if not skip_bad:
                    raise
                return None, str(exc)
            self.normalize_into(pixels[i], array)
            return size, None

        done = list(executor.map(one, range(len(images)))) if executor is not None else [one(i) for i in
                                                                                        range(len(images))]
        ok = [size is not None for size, _ in done]
        if not all(ok):
            pixels = pixels[ok] if any(ok) else None
        return PreparedBatch(start_index, images, pixels, ok, [size for size, _ in done], [e for _, e in done])

    def __call__(self, images: Sequence[ImageInput], executor: Executor | None = None,
                 start_index: int = 0) -> np.ndarray:
        """Preprocess a batch into (N, 3, H, W) float32; decoding runs on `executor` when given."""
        return self.prepare(images, executor, start_index).pixels


@dataclass
class PreparedBatch:
    """One batch ready for a backend, with what is known about each input."""

    start: int  # input index of the first image
    inputs: list
    pixels: np.ndarray | None  # (number decoded, 3, H, W); None when nothing could be decoded
    ok: list[bool]
    sizes: list[tuple[int, int] | None]  # (width, height) before resizing
    errors: list[str | None]


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded recursively to their image files (sorted by relative path).
    Missing paths raise ImageError."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted((p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                           key=lambda p: p.relative_to(path).parts)
            if not found:
                raise ImageError(f"folder {path} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise ImageError(f"image not found: {path}")
    return out
