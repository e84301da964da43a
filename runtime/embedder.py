"""`Embedder`: images in, I-JEPA embeddings out, from an artifact folder and nothing else.

Preprocessing of the next batch (decode + resize on a thread pool) overlaps inference of the
current one. Batches never exceed the artifact's max batch; the last batch is simply smaller
(the batch axis is dynamic), never padded. Safe to call from several threads at once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .backends.base import Backend, BackendError
from .manifest import Manifest, ManifestError
from .preprocessing import ImageError, ImageInput, Preprocessor

BACKENDS = ("auto", "onnxruntime", "tensorrt")


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b` (float64)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)


class Embedder:
    """Runs one exported artifact (a precision of an artifact folder) on images."""

    def __init__(self, manifest: Manifest, folder: Path, backend: Backend, precision: str,
                 resolution: tuple[int, int] | None = None, workers: int = 4):
        self.manifest = manifest
        self.folder = Path(folder)
        self.backend = backend
        self.precision = precision
        self.preprocessor = Preprocessor(manifest.preprocessing, self._check_resolution(resolution))
        # Per-image decode/resize runs on _decode; whole-batch assembly (which waits on _decode) on
        # _prefetch. Two pools, so concurrent callers can never fill one pool with waiting tasks.
        self._decode = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ijepa-decode")
        self._prefetch = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ijepa-prefetch")

    @classmethod
    def load(cls, artifacts: str | Path, precision: str = "fp32", backend: str = "auto", *,
             providers: list[str] | str | None = None, threads: int | None = None,
             graph_optimization_level: str = "all", resolution: tuple[int, int] | None = None,
             workers: int = 4) -> "Embedder":
        """Open `artifacts/manifest.json` and the `precision` artifact on `backend`
        (auto: a TensorRT plan for this machine if one is recorded and usable, else ONNX Runtime)."""
        folder = Path(artifacts)
        manifest = Manifest.load(folder)
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if backend in ("auto", "tensorrt") and precision in manifest.engines and "file" in manifest.engines[precision]:
            from .backends.tensorrt_backend import TensorRTBackend, tensorrt_unavailable_reason

            reason = tensorrt_unavailable_reason()
            if reason is None:
                return cls(manifest, folder, TensorRTBackend(folder, manifest, precision), precision, resolution, workers)
            if backend == "tensorrt":
                raise BackendError(f"cannot use the TensorRT backend: {reason}")
        elif backend == "tensorrt":
            raise BackendError(f"{folder} has no TensorRT plan for {precision}; build one on this GPU with "
                               f"`ijepa-export build-engine --artifacts {folder} --precision {precision}`")
        from .backends.onnxruntime_backend import OnnxRuntimeBackend

        art = manifest.artifact(precision)
        onnx_backend = OnnxRuntimeBackend(folder / art["file"], providers=providers, intra_op_threads=threads,
                                          graph_optimization_level=graph_optimization_level)
        return cls(manifest, folder, onnx_backend, precision, resolution, workers)

    def _check_resolution(self, resolution: tuple[int, int] | None) -> tuple[int, int] | None:
        if resolution is None:
            return None
        res = self.manifest.resolution
        h, w = resolution
        if not res["dynamic"]:
            if [h, w] != list(res["min"]):
                raise ManifestError(f"{self.manifest.name} was exported at a fixed {res['min'][0]}x{res['min'][1]}; "
                                    "re-export with --resolution dynamic to embed at other sizes")
        elif h % res["multiple_of"] or w % res["multiple_of"]:
            raise ManifestError(f"resolution {h}x{w} must be a multiple of the patch size {res['multiple_of']}")
        return h, w

    # ------------------------------------------------------------------ public API

    @property
    def dim(self) -> int:
        return int(self.manifest.architecture["hidden_size"])

    @property
    def labels(self) -> dict[int, str] | None:
        return {int(k): v for k, v in self.manifest.labels.items()} if self.manifest.labels else None

    def embed(self, images: Sequence[ImageInput], batch_size: int | None = None, on_batch=None) -> np.ndarray:
        """(N, D) float32 embeddings (mean over output tokens), in input order.
        `on_batch(n)` is called after each batch of n images (for progress bars)."""
        return self._run(images, "embedding", batch_size, on_batch)

    def tokens(self, images: Sequence[ImageInput], batch_size: int | None = None) -> np.ndarray:
        """(N, tokens, D) float32 last hidden states."""
        return self._run(images, "last_hidden_state", batch_size)

    def logits(self, images: Sequence[ImageInput], batch_size: int | None = None) -> np.ndarray:
        """(N, num_labels) classification logits; needs an artifact exported with a head."""
        if "logits" not in self.manifest.output_names:
            raise ManifestError(f"{self.manifest.name} has no classification head (exported from a "
                                "feature-extraction checkpoint); use embed()")
        return self._run(images, "logits", batch_size)

    def classify(self, images: Sequence[ImageInput], top_k: int = 5,
                 batch_size: int | None = None) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) per image."""
        logits = self.logits(images, batch_size).astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        labels = self.labels or {}
        k = min(top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1)[:, :k]
        return [[(labels.get(int(j), str(int(j))), float(p[j])) for j in row] for p, row in zip(probs, order)]

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        """Cosine similarity matrix between rows of a and rows of b (default: a with itself)."""
        a = np.atleast_2d(np.asarray(a, dtype=np.float64))
        b = a if b is None else np.atleast_2d(np.asarray(b, dtype=np.float64))
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return (a @ b.T).astype(np.float32)

    def close(self) -> None:
        self._prefetch.shutdown(wait=False)
        self._decode.shutdown(wait=False)
        self.backend.close()

    def __enter__(self) -> "Embedder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ batching

    def batches(self, n: int, batch_size: int | None) -> list[tuple[int, int]]:
        limit = int(self.manifest.batch["max"])
        size = min(batch_size or int(self.manifest.batch["opt"]), limit)
        if size < 1:
            raise ValueError("batch_size must be >= 1")
        return [(s, min(s + size, n)) for s in range(0, n, size)]

    def _run(self, images: Sequence[ImageInput], output: str, batch_size: int | None,
             on_batch=None) -> np.ndarray:
        if isinstance(images, (str, bytes, Path, np.ndarray)) or not hasattr(images, "__len__"):
            images = [images]  # a single image
        images = list(images)
        if not images:
            raise ImageError("no images given: pass at least one image")
        spans = self.batches(len(images), batch_size)

        def prefetch(k: int):
            start, end = spans[k]
            return self._prefetch.submit(self.preprocessor, images[start:end], self._decode, start)

        results: list[np.ndarray] = []
        pending = prefetch(0)
        for i, (start, end) in enumerate(spans):
            pixels = pending.result()
            if i + 1 < len(spans):  # overlap: decode the next batch while this one runs
                pending = prefetch(i + 1)
            results.append(self.backend.run(pixels, [output])[output])
            if on_batch:
                on_batch(end - start)
        return np.concatenate(results, axis=0).astype(np.float32, copy=False)
