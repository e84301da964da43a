"""Drift watch: re-embed a sample of served images with another precision (fp32) off the hot path.

Exports the per-image centered cosine between served and shadow vectors (the gate's measure: the mean
shadow embedding over the images seen so far is removed from both sides) and the plain cosine, as
histograms. A low-precision deployment thus shows its accuracy on production images, not only at export.
The shadow runs on its own thread with one inference thread, drops samples when it falls behind, and never
delays a response.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading

import numpy as np

from ijepa_deploy.runtime.similarity import cosine_rows

log = logging.getLogger(__name__)

WARMUP = 16  # images whose shadow vectors form the first centering mean before anything is observed


class ShadowWatch:
    """Samples (image, served vector) pairs at `rate` and compares them with `model`'s vectors."""

    def __init__(self, model, rate: float, metrics, *, batch: int = 8, backlog: int = 64, seed: int | None = None):
        self.model, self.rate, self.metrics, self.batch = model, rate, metrics, batch
        self._queue: queue.Queue = queue.Queue(maxsize=backlog)
        self._random = random.Random(seed)
        self._sum: np.ndarray | None = None
        self._count = 0
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # served, shadow: waiting for the first mean
        self._thread = threading.Thread(target=self._work, name="ijepa-serve-shadow", daemon=True)
        self._thread.start()

    def offer(self, arrays: list[np.ndarray], served: np.ndarray) -> None:
        """Called on the hot path: samples and enqueues without blocking."""
        for array, vector in zip(arrays, served):
            if self._random.random() >= self.rate:
                continue
            try:
                self._queue.put_nowait((array, vector))
            except queue.Full:
                self.metrics.shadow_dropped.inc()

    def _work(self) -> None:
        stopping = False
        while not stopping:
            items = []
            item = self._queue.get()
            while item is not None:
                items.append(item)
                if len(items) == self.batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stopping = item is None
            if not items:
                continue
            try:
                shadow = self.model.embed_arrays([a for a, _ in items])
                self._observe(np.stack([v for _, v in items]), shadow)
            except Exception:
                log.exception("shadow embedding failed; dropped %d sampled images", len(items))

    def _observe(self, served: np.ndarray, shadow: np.ndarray) -> None:
        self.metrics.shadow_images.inc(len(served))
        for value in cosine_rows(served, shadow):
            self.metrics.shadow_cosine.observe(float(value))
        shadow64 = shadow.astype(np.float64)
        self._sum = shadow64.sum(axis=0) if self._sum is None else self._sum + shadow64.sum(axis=0)
        self._count += len(shadow)
        self._pending.extend(zip(served, shadow))
        if self._count < WARMUP:
            return
        mean = self._sum / self._count
        got, ref = np.stack([s for s, _ in self._pending]), np.stack([r for _, r in self._pending])
        self._pending = []
        for value in cosine_rows(got - mean, ref - mean):
            self.metrics.shadow_centered.observe(float(value))

    def close(self) -> None:
        while True:  # make room for the stop mark: what is still queued is dropped
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
        self._thread.join(timeout=30)
        self.model.close()
