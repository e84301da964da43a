"""Reading a collection back, trusting nothing: every record checked against what it describes.

`read_embeddings(folder)` verifies the job record, the input list (its sha256 and count), every
shard's commit record (its position, its inputs' digest, the sha256 and size of its `.npy` and
`.parquet`), that each shard's rows are exactly its inputs in order, and the shape of its
embeddings; the error names the first thing that differs. `collection_digest` is what an index
records of the collection it was built from.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import CollectionError
from .naming import RUN_NAME, shard_names
from .shards import READ, JobRecord, ShardStore, inputs_digest, load_job, pyarrow


def open_collection(folder: str | Path) -> ShardStore:
    folder = Path(folder)
    job = load_job(folder)
    if job is None:
        raise CollectionError(f"{folder} has no {RUN_NAME}: not an ijepa-embed --output-dir folder")
    store = ShardStore(folder, job)
    extra = folder / shard_names(store.shard_count)[2]
    if extra.exists():
        raise CollectionError(f"{folder} holds {extra.name} beyond the {store.shard_count} shard(s) its {RUN_NAME} "
                              f"describes ({job.total} inputs): the job record was edited")
    return store


def display_paths(inputs) -> list[str]:
    """The path each input is shown by: the file, or tar/member."""
    return [f"{p}/{m}" if m else p for p, m in zip(inputs.column("path").to_pylist(),
                                                  inputs.column("member").to_pylist())]


def _shard_table(store: ShardStore, k: int, inputs, verify: bool):
    """(commit record, metadata table) of shard k, checked against its commit record and its slice of
    the input list."""
    pa, pq = pyarrow()
    parquet, record = store.paths(k)[1:]
    commit = store.commit(k)
    if commit is None:
        raise CollectionError(f"{store.folder}: shard {k} is missing or incomplete; finish the run with "
                              f"`ijepa-embed ... --output-dir {store.folder} --resume`")
    if commit.inputs_sha256 != inputs_digest(inputs):
        raise CollectionError(f"{record} was written for other inputs than {store.folder.name}'s input list holds")
    data = _read(parquet, commit.parquet.sha256 if verify else None, record.name)
    try:
        table = pq.read_table(pa.BufferReader(data), **READ)
    except Exception as exc:  # pyarrow raises many types on damaged files
        raise CollectionError(f"shard {k} of {store.folder} is unreadable ({str(exc)[:160]})") from None
    lo, hi = store.bounds(k)
    if table.column("index").to_pylist() != list(range(lo, hi)):
        raise CollectionError(f"{parquet} does not list inputs {lo}..{hi - 1} in order")
    if table.column("path").to_pylist() != display_paths(inputs):
        first = next(i for i, (a, b) in enumerate(zip(table.column("path").to_pylist(), display_paths(inputs)))
                     if a != b)
        raise CollectionError(f"{parquet} row {first} names another input than the input list (index {lo + first})")
    return commit, table


def _read(path: Path, sha256: str | None, record_name: str) -> bytes:
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CollectionError(f"{path} does not match the sha256 in {record_name}: it was changed")
    return data


def check_shard(store: ShardStore, k: int, inputs, verify: bool = True):
    """(embeddings float32, metadata table) of shard k, after checking it against its commit record
    and its slice of the input list."""
    commit, table = _shard_table(store, k, inputs, verify)
    npy, record = store.paths(k)[0], store.paths(k)[2]
    data = _read(npy, commit.npy.sha256 if verify else None, record.name)
    try:
        values = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises many types on damaged files
        raise CollectionError(f"shard {k} of {store.folder} is unreadable ({str(exc)[:160]})") from None
    ok = sum(s == "ok" for s in table.column("status").to_pylist())
    if values.ndim != 2 or values.shape != (ok, store.job.dim) or ok != commit.embedded:
        raise CollectionError(f"{npy} has shape {values.shape}; its Parquet lists {ok} readable images of "
                              f"dimension {store.job.dim}")
    return values.astype(np.float32, copy=False), table


def _readable_paths(table) -> list[str]:
    ok = [s == "ok" for s in table.column("status").to_pylist()]
    return list(itertools.compress(table.column("path").to_pylist(), ok))


def iter_shards(folder: str | Path, *, verify: bool = True) -> Iterator[tuple[np.ndarray, list[str], object]]:
    """(embeddings float32, input paths, metadata table) per shard of a complete collection folder,
    in input order; embeddings and paths cover the readable images only."""
    store = open_collection(folder)
    for k in range(store.shard_count):
        values, table = check_shard(store, k, store.inputs(k), verify)
        yield values, _readable_paths(table), table


def embedded_paths(folder: str | Path) -> list[str]:
    """The input paths of a complete collection's embeddings, in row order (what an index's ids name),
    read from the shards' checked metadata without loading a vector."""
    store = open_collection(folder)
    return [p for k in range(store.shard_count) for p in _readable_paths(_shard_table(store, k, store.inputs(k),
                                                                                       True)[1])]


def read_embeddings(folder: str | Path, *, verify: bool = True, with_rows: bool = False):
    """(embeddings (N, D) float32, input paths) of a collection folder, in input order; images that
    could not be read are left out (`with_rows=True` adds the full per-input metadata table)."""
    pa, _ = pyarrow()
    arrays, paths, tables = [], [], []
    dim = 0
    for values, shard_paths, table in iter_shards(folder, verify=verify):
        arrays.append(values)
        paths += shard_paths
        tables.append(table)
        dim = values.shape[1]
    embeddings = np.concatenate(arrays) if arrays else np.zeros((0, dim), np.float32)
    if with_rows:
        return embeddings, paths, pa.concat_tables(tables)
    return embeddings, paths


def collection_digest(folder: str | Path) -> str:
    """sha256 over the job record and every shard's commit record: changes when any shard does."""
    store = open_collection(folder)
    digest = hashlib.sha256((store.folder / RUN_NAME).read_bytes())
    for k in range(store.shard_count):
        record = store.paths(k)[2]
        if not record.is_file():
            raise CollectionError(f"{store.folder}: shard {k} is missing; finish the run with --resume")
        digest.update(record.read_bytes())
    return "sha256:" + digest.hexdigest()


def job_of(folder: str | Path) -> JobRecord:
    return open_collection(folder).job
