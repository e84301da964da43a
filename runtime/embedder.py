"""`Embedder`: images in, I-JEPA embeddings out, from an artifact folder and nothing else.

Preprocessing of the next batch (decode + resize on a thread pool) overlaps inference of the
current one. Batches never exceed the artifact's max batch; the last batch is simply smaller
(the batch axis is dynamic), never padded. Safe to call from several threads at once, and from a
forked child (`gunicorn --preload`, multiprocessing with fork): thread pools and the backend's
session are rebuilt there on first use; a TensorRT embedder refuses, because CUDA does not survive
a fork.

Inside a host process: a host's pixels (N x H x W x 3 arrays, buffers, DLPack) are read in place,
`preprocess` / `embed_pixels(out=...)` let a host run its own pipeline and own the output rows, and the
GIL is released while images are decoded, resized and normalised (on this embedder's `workers`) and
while the backend runs. The runtime installs no signal handler, configures no logging and prints nothing.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ijepa_deploy.contract.errors import BackendError, ImageError, ManifestError, UsageError
from ijepa_deploy.contract.manifest import Manifest

from .backends import Backend, open_backend
from .config import EmbedConfig
from .embedder_info import describe_embedder
from .host_arrays import host_array, image_rows
from .pixel_batches import check_out, embed_pixels
from .preprocessing import SINGLE_IMAGE_TYPES, ImageInput, PreparedBatch, Preprocessor, describe
from .similarity import similarity_matrix

_LIVE: "weakref.WeakSet[Embedder]" = weakref.WeakSet()


class EmbedderClosedError(BackendError):
    """The embedder was used after close()."""


class Embedder:
    """Runs one exported artifact (a precision of an artifact folder) on images."""

    def __init__(self, manifest: Manifest, backend: Backend, config: EmbedConfig):
        self.manifest = manifest
        self.backend = backend
        self.config = config
        self.precision = config.precision
        self.identity = manifest.artifact(config.precision).identity
        self.preprocessor = Preprocessor(manifest.preprocessing, self._check_resolution(config.resolution))
        self._closed = False
        self._lock = threading.Lock()
        self._start_pools()
        self._pid = os.getpid()
        _LIVE.add(self)

    @classmethod
    def load(cls, artifacts: str | Path, precision: str = "fp32", backend: str = "auto", *,
             config: EmbedConfig | None = None, **options) -> "Embedder":
        """Open `artifacts/manifest.json` and its `precision` artifact on `backend` (auto: a TensorRT
        plan built for this GPU when usable, else OpenVINO on x86 CPUs when installed, else ONNX
        Runtime). Every file is checked against its sha256 first unless `verify=False`. Options are
        `EmbedConfig`'s fields (threads, streams, batch_size, resolution, verify, providers, ...), or
        pass a whole `config`."""
        config = config or EmbedConfig(precision=precision, backend=backend, **options)
        manifest = Manifest.load(artifacts)
        opened = open_backend(manifest, config)
        try:
            if config.warmup:
                opened.warmup()
            return cls(manifest, opened, config)
        except BaseException:
            opened.close()
            raise

    def _check_resolution(self, resolution: tuple[int, int] | None) -> tuple[int, int] | None:
        if resolution is None:
            return None
        res = self.manifest.resolution
        h, w = resolution
        if not res.dynamic:
            if (h, w) != tuple(res.min):
                raise ManifestError(f"{self.manifest.name} was exported at a fixed {res.min[0]}x{res.min[1]}; "
                                    "re-export with --resolution dynamic to embed at other sizes")
        elif h % res.multiple_of or w % res.multiple_of:
            raise UsageError(f"resolution {h}x{w} must be a multiple of the patch size {res.multiple_of}")
        elif not all(lo <= x <= hi for x, lo, hi in zip((h, w), res.min, res.max)):
            raise UsageError(f"resolution {h}x{w} is outside the exported range {res.min[0]}x{res.min[1]} .. "
                             f"{res.max[0]}x{res.max[1]}")
        return h, w

    # ------------------------------------------------------------------ public API

    @property
    def dim(self) -> int:
        return self.manifest.hidden_size

    @property
    def resolution(self) -> tuple[int, int]:
        """The (height, width) images are embedded at."""
        return self.preprocessor.height, self.preprocessor.width

    @property
    def labels(self) -> dict[int, str] | None:
        return {int(k): v for k, v in self.manifest.labels.items()} if self.manifest.labels else None

    def embed(self, images: Iterable[ImageInput] | ImageInput, batch_size: int | None = None,
              on_batch: Callable[[int], None] | None = None, *, out=None) -> np.ndarray:
        """(N, D) float32 embeddings (mean over output tokens), in input order. `images` may be any
        iterable (a list, a generator), one image, or an N x H x W x 3 uint8 batch (a numpy array, a
        buffer such as a memoryview, a DLPack tensor or capsule: read in place, never copied before the
        resize). `on_batch(n)` is called after each batch. `out`, a writable C-contiguous float32
        (N, D) buffer of the caller's, receives the rows in place and is returned."""
        if out is None:
            return self._collect(images, "embedding", batch_size, on_batch)
        target, done = check_out(out, None, self.dim), 0
        for values in self.embed_batches(images, batch_size):
            if done + len(values) > len(target):
                raise UsageError(f"out has {len(target)} rows, but more images were given")
            target[done:done + len(values)] = values
            done += len(values)
            if on_batch:
                on_batch(len(values))
        if done != len(target):
            raise UsageError(f"out has {len(target)} rows, but {done} images were given")
        return target

    def preprocess(self, images: Iterable[ImageInput] | ImageInput, batch_size: int | None = None) -> np.ndarray:
        """(N, 3, H, W) float32: this artifact's own preprocessing (the manifest's canon) of `images`,
        exactly what `embed` feeds the model; `embed_pixels(preprocess(x))` equals `embed(x)`."""
        self._check_open()
        parts = [self._submit(chunk, start, False).result().pixels
                 for start, chunk in _numbered(_chunks(iter(_as_images(images)), self.batch_size(batch_size)))]
        if not parts:
            raise ImageError("no images given: pass at least one image")
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def embed_pixels(self, pixels, out=None, *, batch_size: int | None = None, errors: str = "raise"):
        """Embeddings of already-preprocessed (N, 3, H, W) C-contiguous float32 pixels (from
        `preprocess`, or a C++/GPU pipeline applying the manifest's preprocessing), run in batches
        within the artifact's range without copying them. `out`: a writable C-contiguous float32
        (N, D) buffer written in place (and returned). errors="raise" raises BackendError on NaN/Inf
        rows; errors="mask" returns (vectors, finite) with a per-row boolean mask instead."""
        return embed_pixels(self, pixels, out, batch_size=batch_size, errors=errors)

    def run_backend(self, pixels: np.ndarray, output: str = "embedding") -> np.ndarray:
        """One batch of (n, 3, H, W) float32 pixels through the backend (no checks beyond open/fork)."""
        self._check_open()
        return np.asarray(self.backend.run(pixels, [output])[output], dtype=np.float32)

    def embed_batches(self, images: Iterable[ImageInput], batch_size: int | None = None,
                      output: str = "embedding") -> Iterator[np.ndarray]:
        """Embeddings batch by batch, in input order, holding only a batch or two in memory: for
        collections of any size. The next batch is decoded while the current one runs; when the
        source raises, every batch read before the error is yielded first."""
        for _, values in self.run_batches(images, batch_size, output):
            yield values

    def run_batches(self, images: Iterable[ImageInput], batch_size: int | None = None, output: str = "embedding",
                    skip_bad: bool = False) -> Iterator[tuple[PreparedBatch, np.ndarray]]:
        """(prepared batch, outputs of its decoded images) per batch, in input order. With `skip_bad`,
        unreadable images are reported in the batch (ok False, error) instead of raising."""
        self._check_open()
        size = self.batch_size(batch_size)
        batches = _chunks(iter(_as_images(images)), size)
        failure: BaseException | None = None

        def upcoming(start: int):
            nonlocal failure
            try:
                chunk = next(batches, None)
            except Exception as exc:  # the source raised: finish what was read, then re-raise
                failure = exc
                return None
            return self._submit(chunk, start, skip_bad) if chunk is not None else None

        pending, start = upcoming(0), 0
        while pending is not None:
            prepared = pending.result()
            start += len(prepared.inputs)
            pending = upcoming(start)  # overlap: decode the next batch while this one runs
            yield prepared, self._infer(prepared, output)
        if failure is not None:
            raise failure

    def tokens(self, images: Iterable[ImageInput] | ImageInput, batch_size: int | None = None) -> np.ndarray:
        """(N, tokens, D) float32 last hidden states."""
        return self._collect(images, "last_hidden_state", batch_size)

    def logits(self, images: Iterable[ImageInput] | ImageInput, batch_size: int | None = None) -> np.ndarray:
        """(N, num_labels) classification logits; needs an artifact exported with a head."""
        if "logits" not in self.manifest.output_names:
            raise ManifestError(f"{self.manifest.name} has no classification head (exported from a "
                                "feature-extraction checkpoint); use embed()")
        return self._collect(images, "logits", batch_size)

    def classify(self, images: Iterable[ImageInput] | ImageInput, top_k: int = 5,
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
        return similarity_matrix(a, b)

    def batch_size(self, requested: int | None = None) -> int:
        """The batch size used: `requested` (default: the config's, else the artifact's optimal batch),
        at most the artifact's max."""
        if requested is not None and (not isinstance(requested, int) or requested < 1):
            raise UsageError(f"batch size must be a positive integer, got {requested!r}")
        return min(requested or self.config.batch_size or self.manifest.batch.opt, self.manifest.batch.max)

    def info(self) -> dict:
        """What this embedder is, for a host's logs: versions, backend, device, precision, identity."""
        return describe_embedder(self)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _LIVE.discard(self)
        self._prefetch.shutdown(wait=False, cancel_futures=True)
        self._decode.shutdown(wait=False, cancel_futures=True)
        if self._pid == os.getpid():
            self.backend.close()

    def __enter__(self) -> "Embedder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ threads, processes

    def _start_pools(self) -> None:
        # Per-image decode/resize runs on _decode; whole-batch assembly (which waits on _decode) on
        # _prefetch. Two pools, so concurrent callers can never fill one pool with waiting tasks.
        self._decode = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="ijepa-decode")
        self._prefetch = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ijepa-prefetch")

    def _after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here. New locks and pools now; the
        backend is reopened on first use (its sessions' thread pools died too). The parent's backend is
        never destroyed in the child: its destructor would join threads that do not exist (ONNX
        Runtime waits forever, OpenVINO aborts), so it is kept alive until the process ends."""
        self._lock = threading.Lock()
        _keep_forever(self.backend)
        self._start_pools()

    def _check_open(self) -> None:
        if self._closed:
            raise EmbedderClosedError("this Embedder is closed; load a new one with Embedder.load(...)")
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._reopen_in_child()

    def _reopen_in_child(self) -> None:
        if self.backend.name == "tensorrt":
            raise BackendError("a TensorRT Embedder cannot be used in a forked child (CUDA does not survive fork()); "
                               "load the Embedder in the child, or start workers with spawn")
        self.backend = open_backend(self.manifest, self.config.replace(verify=False))  # verified by the parent
        self._pid = os.getpid()

    # ------------------------------------------------------------------ batching

    def _submit(self, chunk: list, start: int, skip_bad: bool):
        self._check_open()
        try:
            return self._prefetch.submit(self.preprocessor.prepare, chunk, self._decode, start, skip_bad)
        except RuntimeError:  # closed by another thread between the check and the submit
            raise EmbedderClosedError("this Embedder was closed while embedding") from None

    def _infer(self, prepared: PreparedBatch, output: str) -> np.ndarray:
        self._check_open()
        if prepared.pixels is None:
            return self._empty(output)
        result = self.backend.run(prepared.pixels, [output])[output]
        finite = np.isfinite(result.reshape(len(result), -1)).all(axis=1)
        if not finite.all():
            decoded = [i for i, ok in enumerate(prepared.ok) if ok]
            i = decoded[int(np.argmin(finite))]
            raise BackendError(f"the {self.precision} artifact produced NaN/Inf for "
                               f"{describe(prepared.inputs[i], prepared.start + i)}; the artifact may be damaged "
                               "(re-export) or the precision unsuited to this model")
        return np.asarray(result, dtype=np.float32)

    def _empty(self, output: str) -> np.ndarray:
        """The output of a batch in which no image could be read: no rows, the right trailing shape."""
        arch = self.manifest.architecture
        trailing = {"embedding": (self.dim,), "logits": (arch.num_labels,),
                    "last_hidden_state": (arch.tokens(*self.resolution), self.dim)}[output]
        return np.zeros((0, *trailing), dtype=np.float32)

    def _collect(self, images, output: str, batch_size: int | None, on_batch=None) -> np.ndarray:
        results = []
        for result in self.embed_batches(images, batch_size, output):
            results.append(result)
            if on_batch:
                on_batch(len(result))
        if not results:
            raise ImageError("no images given: pass at least one image")
        return np.concatenate(results, axis=0)


def _after_fork_in_child() -> None:
    for embedder in list(_LIVE):
        embedder._after_fork()


def _keep_forever(obj) -> None:
    """One reference nobody holds: the object outlives interpreter shutdown, so its destructor never runs."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


os.register_at_fork(after_in_child=_after_fork_in_child)


def _as_images(images) -> Iterable[ImageInput]:
    """An iterable of images: a batch array (N x H x W x C) becomes N views of it, one image a list of one."""
    array = host_array(images)
    if array is not None:
        return image_rows(array) or [array]
    if isinstance(images, (*SINGLE_IMAGE_TYPES, memoryview)):
        return [images]
    try:
        return iter(images)
    except TypeError:
        raise ImageError(f"{describe(images)}: pass an image or an iterable of images") from None


def _numbered(chunks: Iterator[list]) -> Iterator[tuple[int, list]]:
    start = 0
    for chunk in chunks:
        yield start, chunk
        start += len(chunk)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    """Lists of `size` items; when `items` raises, the items read before the error come first."""
    while True:
        chunk = []
        try:
            for item in items:
                chunk.append(item)
                if len(chunk) == size:
                    break
        except Exception:
            if chunk:
                yield chunk
            raise
        if not chunk:
            return
        yield chunk
        if len(chunk) < size:
            return
