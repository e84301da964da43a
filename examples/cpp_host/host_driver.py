"""The Python side of the C++ host example: the reference the host checks its own results against.

`reference(artifacts, frames)` embeds the host's frames the plain Python way (each frame copied into a
PIL image, a fresh Embedder), independently of the zero-copy path the C++ threads use.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ijepa_deploy.runtime import Embedder


def reference(artifacts: str, frames) -> np.ndarray:
    """(N, D) embeddings of an N x H x W x 3 uint8 buffer, via PIL images."""
    pixels = np.array(frames, copy=True)
    with Embedder.load(artifacts, backend="onnxruntime") as embedder:
        return embedder.embed([Image.fromarray(frame) for frame in pixels])


def frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """The synthetic frames main.cpp generates, computed the same way in numpy (for tests)."""
    i = np.arange(count)[:, None, None, None] + seed
    y = np.arange(height)[None, :, None, None]
    x = np.arange(width)[None, None, :, None]
    c = np.arange(3)[None, None, None, :]
    return ((x * (3 + i) + y * (5 + 2 * c) + 17 * i + (x * y) % 31) % 256).astype(np.uint8)
