"""The served artifact: an `Embedder` loaded (sha256-verified) and warmed up, split into the two steps the
batcher needs: stack + normalize already-resized images, then run the backend on the pixels."""

from __future__ import annotations

import logging
import time

import numpy as np

from ijepa_deploy.runtime import BackendError, Embedder

from .config import ServeConfig

log = logging.getLogger(__name__)


class ServedModel:
    """One precision of an artifact folder, ready for batches of (H, W, 3) uint8 images."""

    def __init__(self, embedder: Embedder, name: str, max_batch: int):
        self.embedder = embedder
        self.name = name
        self.max_batch = max_batch
        self.load_seconds = 0.0

    @classmethod
    def load(cls, config: ServeConfig, precision: str | None = None, threads: int | None = None) -> "ServedModel":
        """Load, verify and warm up `precision` (default: the served one) of `config.artifacts`."""
        start = time.perf_counter()
        embedder = Embedder.load(config.artifacts, config=config.embed_config(precision, threads))
        try:
            batch = embedder.batch_size(config.max_batch)
            if config.max_batch and config.max_batch > batch:
                log.warning("--max-batch %d is over the artifact's max batch; using %d", config.max_batch, batch)
            model = cls(embedder, config.model_name or embedder.manifest.name, batch)
            model.warm_up(config.warmup_batches)
        except BaseException:
            embedder.close()
            raise
        model.load_seconds = time.perf_counter() - start
        return model

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def tokens_per_image(self) -> int:
        return self.embedder.manifest.architecture.tokens(*self.embedder.resolution)

    def prepare(self, arrays: list[np.ndarray]) -> np.ndarray:
        """(N, H, W, 3) uint8 images at the model's size -> (N, 3, H, W) float32 model input."""
        return self.embedder.preprocessor.normalize(np.stack(arrays))

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        """(N, D) float32 embeddings of normalized pixels (rows may be non-finite; the caller checks)."""
        return self.embedder.run_backend(pixels)

    def embed_arrays(self, arrays: list[np.ndarray]) -> np.ndarray:
        return self.infer(self.prepare(arrays))

    def warm_up(self, batches: int) -> None:
        """Run full batches and a single image (OpenVINO compiles each shape on first use)."""
        pre = self.embedder.preprocessor
        rng = np.random.default_rng(0)
        for i in range(batches):
            for size in (self.max_batch, 1):
                images = [rng.integers(0, 256, (pre.height, pre.width, 3), dtype=np.uint8) for _ in range(size)]
                out = self.embed_arrays(images)
                if not np.isfinite(out).all():
                    raise BackendError(f"the {self.embedder.precision} artifact produced NaN/Inf while warming up")

    @property
    def identity(self) -> str:
        return self.embedder.identity

    def describe(self) -> dict:
        manifest = self.embedder.manifest
        return {"name": self.name, "artifact": manifest.name, "precision": self.embedder.precision,
                "backend": self.embedder.backend.describe(), "dim": str(self.dim), "max_batch": str(self.max_batch),
                "identity": self.identity, "folder": str(manifest.folder)}

    def close(self) -> None:
        self.embedder.close()
