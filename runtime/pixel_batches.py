"""Already-preprocessed pixels in, embeddings out, into the caller's own buffer when it gives one.

`Embedder.embed_pixels(pixels, out=None, errors="raise")` is for hosts that preprocess themselves (a
C++ or GPU pipeline applying the artifact's recorded preprocessing, or `Embedder.preprocess`): the
pixels are checked once (one UsageError each for dtype, shape and contiguity), split into batches
within the artifact's range as views (never copied), run, and each batch's rows are written into
`out` in place. With errors="mask", rows that came out NaN/Inf are reported in a boolean mask instead
of failing the whole call (a server answers the good rows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ijepa_deploy.contract.errors import BackendError, UsageError

from .host_arrays import host_array

if TYPE_CHECKING:
    from .embedder import Embedder

ERRORS = ("raise", "mask")


def check_pixels(embedder: "Embedder", pixels) -> np.ndarray:
    """(N, 3, H, W) C-contiguous float32 at a size the artifact accepts, as a view of the caller's memory."""
    array = host_array(pixels)
    if array is None:
        raise UsageError(f"pixels must be an (N, 3, H, W) float32 array (or buffer, or DLPack tensor), got "
                         f"{type(pixels).__name__}")
    if array.dtype != np.float32:
        raise UsageError(f"pixels must be float32, got {array.dtype}; preprocess with Embedder.preprocess or "
                         "convert with .astype(np.float32)")
    if array.ndim != 4 or array.shape[1] != 3 or array.shape[0] < 1:
        raise UsageError(f"pixels must have shape (N, 3, H, W) with N >= 1, got {tuple(array.shape)}")
    if not array.flags.c_contiguous:
        raise UsageError("pixels must be C-contiguous (np.ascontiguousarray makes the one copy this needs)")
    res = embedder.manifest.resolution
    h, w = array.shape[2:]
    accepted = (h % res.multiple_of == 0 and w % res.multiple_of == 0 and res.min[0] <= h <= res.max[0]
                and res.min[1] <= w <= res.max[1]) if res.dynamic else (h, w) == tuple(res.min)
    if not accepted:
        raise UsageError(f"pixels are {h}x{w}, which {embedder.manifest.name} does not accept (it embeds at "
                         f"{embedder.resolution[0]}x{embedder.resolution[1]}; range {res.min[0]}x{res.min[1]} .. "
                         f"{res.max[0]}x{res.max[1]}, multiples of {res.multiple_of})")
    return array


def check_out(out, rows: int | None, dim: int) -> np.ndarray:
    """The caller's (rows, dim) C-contiguous, writable float32 buffer (any number of rows when `rows` is
    None), as a numpy view of it."""
    array = host_array(out)
    if array is None or array.dtype != np.float32 or array.ndim != 2 or array.shape[1] != dim \
            or (rows is not None and array.shape[0] != rows) or not array.flags.c_contiguous \
            or not array.flags.writeable:
        rows = "N" if rows is None else rows
        have = "not an array" if array is None else (f"{array.dtype} {tuple(array.shape)}"
                                                     f"{'' if array.flags.c_contiguous else ' non-contiguous'}"
                                                     f"{'' if array.flags.writeable else ' read-only'}")
        raise UsageError(f"out must be a writable C-contiguous float32 array of shape ({rows}, {dim}), got {have}")
    return array


def embed_pixels(embedder: "Embedder", pixels, out=None, *, batch_size: int | None = None,
                 errors: str = "raise"):
    """See `Embedder.embed_pixels`."""
    if errors not in ERRORS:
        raise UsageError(f"errors must be one of {', '.join(ERRORS)}, got {errors!r}")
    array = check_pixels(embedder, pixels)
    n = array.shape[0]
    target = check_out(out, n, embedder.dim) if out is not None else np.empty((n, embedder.dim), np.float32)
    finite = np.ones(n, dtype=bool)
    size = embedder.batch_size(batch_size)
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        result = embedder.run_backend(array[lo:hi], "embedding")
        target[lo:hi] = result
        finite[lo:hi] = np.isfinite(result).all(axis=1)
    if errors == "mask":
        return target, finite
    if not finite.all():
        raise BackendError(f"the {embedder.precision} artifact produced NaN/Inf for pixel row "
                           f"{int(np.argmin(finite))}; check the pixels (errors='mask' reports bad rows "
                           "instead of raising)")
    return target
