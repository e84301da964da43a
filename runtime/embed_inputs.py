"""Embedding a list of inputs in memory, keeping what could not be read apart (`ijepa-embed` without
`--output-dir`, and any caller that wants vectors plus the names they belong to)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ijepa_deploy.contract.errors import ImageError

from .embedder import Embedder
from .preprocessing import describe
from .sources import expand_sources


@dataclass
class Embedded:
    vectors: np.ndarray  # (N, D) float32, the readable inputs in order
    inputs: list  # the readable inputs, in order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, why)

    @property
    def names(self) -> list[str]:
        return [describe(p) for p in self.inputs]


def embed_inputs(embedder: Embedder, images: Iterable, *, skip_bad: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> Embedded:
    """Expand `images` (files, folders, lists, tar shards) and embed them; with `skip_bad`, unreadable
    inputs are listed in `skipped` instead of raising."""
    sources = expand_sources(images)
    kept, bad, parts, done = [], [], [], 0
    for prepared, values in embedder.run_batches(sources, skip_bad=skip_bad):
        for item, ok, error in zip(prepared.inputs, prepared.ok, prepared.errors):
            if ok:
                kept.append(item)
            else:
                bad.append((describe(item), error))
        if len(values):
            parts.append(values)
        done += len(prepared.inputs)
        if progress:
            progress(done, len(sources))
    if not kept:
        raise ImageError("none of the inputs could be read as an image")
    return Embedded(np.concatenate(parts), kept, bad)
