"""Writing a job's shards on this machine: every incomplete shard, written as it fills.

Decoding, inference and writing overlap (a shard is written on a background thread while the next one
is embedded); memory holds one shard being filled and one being written. `--resume` keeps committed
shards and redoes the rest: after a kill at any moment the resumed run holds every input exactly once.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ijepa_deploy.contract.shards import Row, ShardStore
from ijepa_deploy.runtime.embedder import Embedder

from .inputs import sources_of
from .job import JobSpec

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (inputs done, total)


def job_spec(embedder: Embedder, folder: str | Path, shard_size: int, dtype: str) -> JobSpec:
    """What an opened embedder gives a job record."""
    return JobSpec(name=embedder.manifest.name, artifacts=str(Path(folder).resolve()), identity=embedder.identity,
                   precision=embedder.precision, compute_precision=embedder.backend.compute_precision,
                   resolution=embedder.resolution, dim=embedder.dim, backend=embedder.backend.describe(),
                   shard_size=shard_size, dtype=dtype)


def pending_shards(store: ShardStore) -> list[int]:
    return [k for k in range(store.shard_count) if store.commit(k) is None]


def write_shards(embedder: Embedder, store: ShardStore, progress: Progress | None = None) -> int:
    """Run every incomplete shard's inputs through `embedder`, writing each shard when it fills (on a
    background thread, while the next one is embedded); returns how many inputs ran."""
    pending = pending_shards(store)
    indices: deque[int] = deque()
    tables: dict[int, object] = {}
    done = store.job.total - sum(store.size(k) for k in pending)

    def feed():
        for k in pending:
            table = store.inputs(k)
            tables[k] = table
            lo, _ = store.bounds(k)
            for offset, source in enumerate(sources_of(table)):
                indices.append(lo + offset)
                yield source

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ijepa-shard-writer")
    in_flight: Future | None = None
    current, rows, parts = None, [], []

    def flush():
        nonlocal in_flight, rows, parts
        if current is None:
            return
        values = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
        if in_flight is not None:
            in_flight.result()  # at most one shard being written while the next fills
        in_flight = writer.submit(store.write, current, values, rows, tables.pop(current))
        rows, parts = [], []

    try:
        for prepared, values in embedder.run_batches(feed(), skip_bad=True):
            ok_values = iter(values)
            for source, ok, size, error in zip(prepared.inputs, prepared.ok, prepared.sizes, prepared.errors):
                index = indices.popleft()
                shard = index // store.job.shard_size
                if shard != current:
                    flush()
                    current = shard
                rows.append(Row(index, str(source), size[0] if size else None, size[1] if size else None,
                                "ok" if ok else "error", error))
                if ok:
                    parts.append(next(ok_values)[None])
            done += len(prepared.inputs)
            if progress:
                progress(done, store.job.total)
        flush()
        if in_flight is not None:
            in_flight.result()
    finally:
        writer.shutdown(wait=True)
    return sum(store.size(k) for k in pending)
