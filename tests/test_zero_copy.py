"""A host's own memory in, embeddings out: arrays, buffers and DLPack read in place (no copy before the
resize), preprocessed pixels run as given, results written into the caller's buffer."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

import ijepa_deploy.runtime.preprocessing as preprocessing
from ijepa_deploy.runtime import BackendError, Embedder, UsageError

from .helpers import skimage_data_dir

NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]


@pytest.fixture(scope="module")
def embedder(tiny_fp32):
    with Embedder.load(tiny_fp32, backend="onnxruntime", workers=1) as opened:
        yield opened


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    """(4, 90, 120, 3) uint8, C-contiguous: frames a host holds (not at the model's 56x56)."""
    return np.stack([np.asarray(Image.open(skimage_data_dir() / n).convert("RGB").resize((120, 90))) for n in NAMES])


def _spy(monkeypatch, name: str) -> list:
    """Record the pixel array each call of preprocessing.<name> receives."""
    seen, real = [], getattr(preprocessing, name)

    def spy(*args, **kwargs):
        seen.append(next(a for a in args if isinstance(a, np.ndarray) and a.dtype == np.uint8))
        return real(*args, **kwargs)

    monkeypatch.setattr(preprocessing, name, spy)
    return seen


def _host_views(batch: np.ndarray) -> dict:
    return {"array": batch, "memoryview": memoryview(batch), "dlpack tensor": torch.from_numpy(batch),
            "dlpack capsule": torch.utils.dlpack.to_dlpack(torch.from_numpy(batch))}


@pytest.mark.parametrize("kind", ["array", "memoryview", "dlpack tensor", "dlpack capsule"])
def test_host_batches_embed_like_pil_images_without_a_copy_before_the_resize(embedder, batch, kind, monkeypatch):
    expected = embedder.embed([Image.fromarray(frame) for frame in batch])
    seen = _spy(monkeypatch, "resize_rgb")
    got = embedder.embed(_host_views(batch)[kind])
    assert np.abs(got - expected).max() <= 1e-6
    assert len(seen) == len(batch)
    assert all(np.shares_memory(row, batch) for row in seen)  # what reaches the resize is the caller's memory


def test_a_large_batch_is_never_copied_whole(embedder):
    """tracemalloc sees every numpy allocation: preprocessing 8 frames of 1024x768 (18.9 MB) allocates
    less than half of one frame (measured 0.6 MB: the float32 output, two batches of 4 and their
    concatenation); PIL's own working buffer inside the resize is C memory, outside our code."""
    frames = np.random.default_rng(0).integers(0, 256, (8, 768, 1024, 3), dtype=np.uint8)
    embedder.preprocess(frames[:1])
    tracemalloc.start()
    try:
        pixels = embedder.preprocess(frames)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pixels.shape == (8, 3, 56, 56)
    print(f"peak traced allocation while preprocessing {frames.nbytes / 1e6:.1f} MB of frames: {peak / 1e6:.3f} MB")
    assert peak < frames[0].nbytes / 2


def test_frames_at_the_model_size_reach_the_normalisation_as_views(embedder, monkeypatch):
    frames = np.random.default_rng(1).integers(0, 256, (3, 56, 56, 3), dtype=np.uint8)
    seen = _spy(monkeypatch, "resize_rgb")
    embedder.preprocess(memoryview(frames))
    assert len(seen) == 3 and all(np.shares_memory(row, frames) for row in seen)
    monkeypatch.undo()
    normalized = []
    real = embedder.preprocessor.normalize_into
    monkeypatch.setattr(embedder.preprocessor, "normalize_into",
                        lambda out, image: normalized.append(image) or real(out, image))
    embedder.preprocess(frames)
    assert all(np.shares_memory(row, frames) for row in normalized)  # no copy at all before float32


def test_a_non_contiguous_view_costs_one_copy_per_frame(embedder, batch):
    view = batch[:, :, ::2]  # every other column: not C-contiguous
    assert not view.flags.c_contiguous
    expected = embedder.embed(np.ascontiguousarray(view))
    assert np.abs(embedder.embed(view) - expected).max() <= 1e-6
    tracemalloc.start()
    try:
        embedder.preprocess(view)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert view[0].nbytes <= peak < 2 * view[0].nbytes + 200_000  # one frame copied at a time, never the batch


def test_embed_pixels_of_preprocess_equals_embed_and_writes_out_in_place(embedder, batch):
    expected = embedder.embed(batch)
    pixels = embedder.preprocess(batch)
    assert pixels.shape == (4, 3, 56, 56) and pixels.dtype == np.float32
    assert np.abs(embedder.embed_pixels(pixels) - expected).max() <= 1e-6
    out = np.full((4, embedder.dim), np.nan, dtype=np.float32)
    returned = embedder.embed_pixels(pixels, out=out, batch_size=3)  # two backend batches, one buffer
    assert np.shares_memory(returned, out) and np.abs(out - expected).max() <= 1e-6
    host_buffer = bytearray(4 * embedder.dim * 4)  # a caller's raw memory, seen through a buffer
    embedder.embed_pixels(pixels, out=memoryview(host_buffer).cast("B").cast("f", (4, embedder.dim)))
    assert np.abs(np.frombuffer(host_buffer, np.float32).reshape(4, -1) - expected).max() <= 1e-6
    into = np.zeros((4, embedder.dim), np.float32)
    assert embedder.embed(batch, out=into) is not None and np.abs(into - expected).max() <= 1e-6


def test_embed_pixels_refuses_what_it_cannot_run_in_place(embedder):
    good = np.zeros((2, 3, 56, 56), np.float32)
    cases = [(good.astype(np.float64), None, "float32"), (np.zeros((2, 56, 56, 3), np.float32), None, r"\(N, 3, H, W\)"),
             (np.zeros((2, 3, 56, 112), np.float32)[..., ::2], None, "C-contiguous"),
             (np.zeros((2, 3, 50, 56), np.float32), None, "does not accept"),
             (good, np.zeros((3, embedder.dim), np.float32), "shape"),
             (good, np.zeros((2, embedder.dim), np.float32)[:, ::1].T.copy().T, "C-contiguous"),
             (good, np.frombuffer(bytes(2 * embedder.dim * 4), np.float32).reshape(2, -1), "read-only")]
    for pixels, out, message in cases:
        with pytest.raises(UsageError, match=message):
            embedder.embed_pixels(pixels, out=out)
    with pytest.raises(UsageError, match="errors"):
        embedder.embed_pixels(good, errors="ignore")


def test_non_finite_rows_raise_or_come_back_masked(embedder, batch):
    pixels = embedder.preprocess(batch)
    pixels[1, 0, 3, 3] = np.nan
    with pytest.raises(BackendError, match="pixel row 1"):
        embedder.embed_pixels(pixels)
    vectors, finite = embedder.embed_pixels(pixels, errors="mask")
    assert finite.tolist() == [True, False, True, True]
    assert np.isfinite(vectors[finite]).all()


def test_device_memory_is_refused_with_a_clear_error(embedder):
    class OnGpu:
        def __dlpack__(self, *args, **kwargs):
            raise AssertionError("never consumed")

        def __dlpack_device__(self):
            return (2, 0)  # kDLCUDA

    with pytest.raises(UsageError, match="CPU memory"):
        embedder.embed(OnGpu())
