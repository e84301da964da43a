"""Collections: sharded, resumable embedding output, and reading it back.

    DIR/run.json                 what produced the run (artifact, sha256, precision, backend,
                                 preprocessing, shard size, dtype, input count)
    DIR/shard-000000.npy         (rows, D) embeddings of the shard's readable images, float32 or float16
    DIR/shard-000000.parquet     one row per input: index (global input order), path, width, height,
                                 status (ok | error), error, row (in the .npy, or null)

Shard k always holds inputs [k * shard_size, (k + 1) * shard_size). Each shard's `.npy` is renamed
into place first and its `.parquet` (which records the `.npy`'s sha256) last, so a shard is complete
exactly when its Parquet file exists and matches its `.npy`. `--resume` keeps complete shards and
redoes every other one: after a kill at any moment, the resumed run holds every input exactly once.
Decoding, inference and writing overlap; memory holds one shard and one being written.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import itertools
import json
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .atomic import atomic_file, write_atomic
from .errors import ManifestError, OutputError, UsageError, UserError

RUN_NAME = "run.json"
SHARD_DIGITS = 6


class CollectionError(UserError):
    """A collection folder is incomplete, inconsistent, or belongs to another run."""


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("sharded output needs pyarrow: pip install 'ijepa-deploy[collections]'") from None
    return pa, pq


@dataclass
class Row:
    """What is known about one input after its batch ran."""

    index: int
    path: str
    width: int | None
    height: int | None
    status: str  # "ok" | "error"
    error: str | None


class ShardStore:
    """The shard files of one collection folder."""

    def __init__(self, folder: Path, shard_size: int, dtype: str = "float32"):
        self.folder = Path(folder)
        self.shard_size = shard_size
        self.dtype = np.dtype(dtype)

    def names(self, k: int) -> tuple[Path, Path]:
        stem = self.folder / f"shard-{k:0{SHARD_DIGITS}d}"
        return stem.with_suffix(".npy"), stem.with_suffix(".parquet")

    def shard_count(self, total: int) -> int:
        return -(-total // self.shard_size)

    def is_complete(self, k: int, total: int) -> bool:
        """The shard's Parquet exists, lists exactly its inputs, and its `.npy` has the recorded size."""
        npy, parquet = self.names(k)
        if not parquet.is_file() or not npy.is_file():
            return False
        try:
            meta = self.read_meta(k)
        except CollectionError:
            return False
        lo, hi = k * self.shard_size, min((k + 1) * self.shard_size, total)
        return meta["indices"] == list(range(lo, hi)) and npy.stat().st_size == meta["npy_bytes"]

    def write(self, k: int, values: np.ndarray, rows: list[Row]) -> None:
        """Write shard k: `.npy` first, then the Parquet that commits it (both atomic)."""
        pa, pq = _pyarrow()
        npy, parquet = self.names(k)
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(values, dtype=self.dtype), allow_pickle=False)
        data = buffer.getvalue()
        ok_rows = iter(range(len(values)))
        table = pa.table({
            "index": pa.array([r.index for r in rows], pa.int64()),
            "path": pa.array([r.path for r in rows], pa.string()),
            "width": pa.array([r.width for r in rows], pa.int32()),
            "height": pa.array([r.height for r in rows], pa.int32()),
            "status": pa.array([r.status for r in rows], pa.string()),
            "error": pa.array([r.error for r in rows], pa.string()),
            "row": pa.array([next(ok_rows) if r.status == "ok" else None for r in rows], pa.int32()),
        }).replace_schema_metadata({"ijepa_npy": npy.name, "ijepa_npy_sha256": hashlib.sha256(data).hexdigest(),
                                    "ijepa_npy_bytes": str(len(data)), "ijepa_shard": str(k)})
        try:
            with atomic_file(npy) as fh:
                fh.write(data)
            with atomic_file(parquet) as fh:
                pq.write_table(table, fh)
        except OSError as exc:
            raise OutputError(f"cannot write shard {k} to {self.folder}: {exc.strerror or exc}") from None

    def read_meta(self, k: int) -> dict:
        pa, pq = _pyarrow()
        npy, parquet = self.names(k)
        try:
            table = pq.read_table(parquet)
            meta = {key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()}
            return {"indices": table.column("index").to_pylist(), "table": table,
                    "npy_sha256": meta["ijepa_npy_sha256"], "npy_bytes": int(meta["ijepa_npy_bytes"])}
        except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
            raise CollectionError(f"{parquet} is unreadable ({str(exc)[:200]}); resume the run to rewrite it") from None

    def remove_partial(self) -> None:
        """Temporary files of an interrupted write (never a committed shard)."""
        for tmp in self.folder.glob(".shard-*.tmp"):
            tmp.unlink(missing_ok=True)


@dataclass
class RunRecord:
    name: str
    artifacts: str
    artifact_sha256: str
    precision: str
    backend: str
    preprocessing: dict
    inputs: list[str]
    total: int
    shard_size: int
    dtype: str
    dim: int
    created: str = ""
    format: int = 1

    def same_job(self, other: "RunRecord") -> list[str]:
        keys = ("artifact_sha256", "precision", "preprocessing", "inputs", "total", "shard_size", "dtype", "dim")
        return [k for k in keys if getattr(self, k) != getattr(other, k)]


def load_run(folder: Path) -> RunRecord | None:
    path = folder / RUN_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return RunRecord(**{k: data[k] for k in RunRecord.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError) as exc:
        raise CollectionError(f"{path} is not a run record ({str(exc)[:200]}); choose another --output-dir") from None


def prepare_folder(folder: Path, record: RunRecord, resume: bool) -> ShardStore:
    """Create or reopen a collection folder for `record`; refuse to mix two different jobs."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None
    existing = load_run(folder)
    if existing is not None:
        if not resume:
            raise CollectionError(f"{folder} already holds a run ({existing.total} inputs, {existing.precision}); "
                                  "pass --resume to continue it, or choose another --output-dir")
        differ = existing.same_job(record)
        if differ:
            raise CollectionError(f"{folder} was written by a different job ({', '.join(differ)} differ); "
                                  "use another --output-dir, or the same inputs and artifact to resume")
    elif any(folder.iterdir()):
        raise CollectionError(f"{folder} is not empty and holds no {RUN_NAME}; choose an empty or new --output-dir")
    else:
        try:
            write_atomic(folder / RUN_NAME, json.dumps(asdict(record), indent=2) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    store = ShardStore(folder, record.shard_size, record.dtype)
    store.remove_partial()
    return store


class Progress:
    """Images done, images/s and ETA, on a terminal only (for runs of 16 images or more)."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.start = total, done, time.perf_counter()
        self.first = done
        self.tty = sys.stderr.isatty() and total >= 16

    def update(self, n: int) -> None:
        self.done += n
        if not self.tty:
            return
        rate = (self.done - self.first) / max(time.perf_counter() - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 1e7 else "--:--:--"
        sys.stderr.write(f"\r  {self.done}/{self.total} images, {rate:.2f} images/s, ETA {eta_text}  ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def pending_inputs(sources: Iterable, store: ShardStore, total: int) -> Iterator[tuple[int, object]]:
    """(global index, input) for every input of an incomplete shard, in order."""
    done = {k for k in range(store.shard_count(total)) if store.is_complete(k, total)}
    for index, source in enumerate(sources):
        if index // store.shard_size not in done:
            yield index, source


def embed_collection(images: Iterable[str], output_dir: Path, artifacts: str | Path, *, precision: str = "fp32",
                     backend: str = "auto", batch_size: int | None = None, shard_size: int = 10000,
                     resume: bool = False, dtype: str = "float32", ray_address: str | None = None,
                     verify: bool = True, threads: int | None = None, resolution=None, providers=None,
                     quiet: bool = False) -> Path:
    """Embed every input into shards under `output_dir` (see the module doc); returns the folder."""
    from .manifest import Manifest
    from .sources import iter_sources

    images = [str(i) for i in images]
    _pyarrow()
    total = sum(1 for _ in iter_sources(images))
    if total == 0:
        raise UsageError("the inputs hold no images")
    manifest = Manifest.load(artifacts)
    art = manifest.artifact(precision)
    record = RunRecord(name=manifest.name, artifacts=str(artifacts), artifact_sha256=art.files[0].sha256,
                       precision=precision, backend=backend, preprocessing=json.loads(json.dumps(asdict(manifest.preprocessing))),
                       inputs=images, total=total, shard_size=shard_size, dtype=dtype, dim=manifest.hidden_size,
                       created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    store = prepare_folder(Path(output_dir), record, resume)
    if ray_address:
        from ijepa_deploy.ray import embed_collection_on_ray

        embed_collection_on_ray(store, record, ray_address, batch_size=batch_size, verify=verify, quiet=quiet)
    else:
        from .embedder import Embedder

        with Embedder.load(artifacts, precision, backend, verify=verify, threads=threads, resolution=resolution,
                           providers=providers) as embedder:
            write_shards(embedder, store, iter_sources(images), total, batch_size, quiet=quiet)
    if not quiet:
        print(f"wrote {store.shard_count(total)} shard(s) of {total} inputs to {output_dir}", file=sys.stderr)
    return Path(output_dir)


def write_shards(embedder, store: ShardStore, sources: Iterable, total: int, batch_size: int | None = None,
                 quiet: bool = False) -> None:
    """Run the incomplete shards' inputs through `embedder` and write each shard when it fills;
    a shard is written on a background thread while the next one is embedded."""
    indices: deque[int] = deque()

    def feed():
        for index, source in pending_inputs(sources, store, total):
            indices.append(index)
            yield source

    progress = Progress(total, 0)
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
        in_flight = writer.submit(store.write, current, values, rows)
        rows, parts = [], []

    try:
        for prepared, values in embedder.run_batches(feed(), batch_size, skip_bad=True):
            ok_values = iter(values)
            for source, ok, size, error in zip(prepared.inputs, prepared.ok, prepared.sizes, prepared.errors):
                index = indices.popleft()
                shard = index // store.shard_size
                if shard != current:
                    flush()
                    current = shard
                rows.append(Row(index, str(source), size[0] if size else None, size[1] if size else None,
                                "ok" if ok else "error", error))
                if ok:
                    parts.append(next(ok_values)[None])
            progress.update(len(prepared.inputs))
        flush()
        if in_flight is not None:
            in_flight.result()
    finally:
        writer.shutdown(wait=True)
        progress.close()


def iter_shards(folder: str | Path, *, verify: bool = True):
    """(embeddings float32, input paths, metadata table) per shard of a complete collection folder,
    in input order; embeddings and paths cover the readable images only."""
    pa, pq = _pyarrow()
    folder = Path(folder)
    record = load_run(folder)
    if record is None:
        raise CollectionError(f"{folder} has no {RUN_NAME}: not an ijepa-embed --output-dir folder")
    store = ShardStore(folder, record.shard_size, record.dtype)
    for k in range(store.shard_count(record.total)):
        if not store.is_complete(k, record.total):
            raise CollectionError(f"{folder}: shard {k} is missing or incomplete; finish the run with "
                                  f"`ijepa-embed ... --output-dir {folder} --resume`")
        npy, _ = store.names(k)
        meta = store.read_meta(k)
        data = npy.read_bytes()
        if verify and hashlib.sha256(data).hexdigest() != meta["npy_sha256"]:
            raise ManifestError(f"{npy} does not match the sha256 recorded in its Parquet file: it was changed")
        values = np.load(io.BytesIO(data), allow_pickle=False)
        table = meta["table"]
        ok = [s == "ok" for s in table.column("status").to_pylist()]
        if len(values) != sum(ok) or values.ndim != 2 or values.shape[1] != record.dim:
            raise CollectionError(f"{npy} has shape {values.shape}; its Parquet lists {sum(ok)} readable images")
        yield values.astype(np.float32, copy=False), list(itertools.compress(table.column("path").to_pylist(), ok)), table


def read_embeddings(folder: str | Path, *, verify: bool = True, with_rows: bool = False):
    """(embeddings (N, D) float32, input paths) of a collection folder, in input order; images that
    could not be read are left out (`with_rows=True` adds the full per-input metadata table)."""
    pa, _ = _pyarrow()
    arrays, paths, tables = [], [], []
    dim = None
    for values, shard_paths, table in iter_shards(folder, verify=verify):
        arrays.append(values)
        paths += shard_paths
        tables.append(table)
        dim = values.shape[1]
    embeddings = np.concatenate(arrays) if arrays else np.zeros((0, dim or 0), np.float32)
    if with_rows:
        return embeddings, paths, pa.concat_tables(tables)
    return embeddings, paths
