"""The collection format: what `ijepa-embed --output-dir` writes and every reader checks.

    DIR/run.json               the job record: artifact identity, every option that changes the vectors,
                               shard size, total, and the sha256 of the resolved input list
    DIR/inputs.parquet         the inputs, resolved once at the start: index, argument as given, absolute
                               path, tar member and offset, size, mtime, or why it cannot be read
    DIR/shard-000000.npy       (rows, D) embeddings of the shard's readable images, float32 or float16
    DIR/shard-000000.parquet   one row per input: index, path, width, height, status (ok | error), error, row
    DIR/shard-000000.json      the shard's commit record: rows, inputs digest, sha256 and size of both files

Shard k holds inputs [k * shard_size, (k + 1) * shard_size). Its `.npy` and `.parquet` are renamed
into place first and its commit record last, so a shard exists exactly when its commit record does
and matches its files. Readers verify every record against what it describes and name the first
thing that differs: an edited, truncated or swapped file is never believed.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_file, write_atomic
from .errors import CollectionError, OutputError, UsageError
from .integrity import sha256_file
from .manifest import FileRecord
from .naming import INPUTS_NAME, RUN_NAME, shard_names
from .records import dump_record, load_record

FORMAT = 2
MAX_RECORD_BYTES = 1 << 20
# Parquet tables here are small (one row per input): read them on the calling thread. pyarrow 26.0.1's
# threaded read of our shard files made the interpreter abort at exit ("terminate called without an
# active exception") in most runs on this machine.
READ = {"use_threads": False}
INPUT_COLUMNS = ("index", "given", "path", "member", "offset", "size", "mtime_ns", "error")


def pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("collections need pyarrow: pip install 'ijepa-deploy[collections]'") from None
    return pa, pq


@dataclass(frozen=True)
class JobRecord:
    """run.json: what produced the collection, and what a resumed run must match."""

    name: str  # the artifact's name
    artifacts: str  # the artifact folder, absolute
    identity: str  # contract.identity of the artifact
    precision: str
    compute_precision: str  # the backend's arithmetic: "file" or a lower inference precision ("bf16")
    resolution: tuple[int, int]
    dtype: str
    dim: int
    shard_size: int
    total: int
    inputs: FileRecord  # inputs.parquet
    given: tuple[str, ...] = ()  # the input arguments as given
    backend: str = ""  # for people: which backend ran it
    cwd: str = ""
    created: str = ""
    format: int = FORMAT

    # compared on resume, in this order (the input lists are compared row by row); the others may differ
    VECTOR_FIELDS = ("identity", "precision", "compute_precision", "resolution", "dtype", "dim", "shard_size")

    def first_difference(self, other: "JobRecord") -> str | None:
        """'<field> is <theirs> now, <ours> in the collection' for the first field that changes the job."""
        for key in self.VECTOR_FIELDS:
            mine, theirs = getattr(other, key), getattr(self, key)
            if mine != theirs:
                return f"{key} is {_show(mine)} now, {_show(theirs)} in the collection"
        return None


@dataclass(frozen=True)
class ShardCommit:
    """shard-K.json: written last, after the shard's two files; what makes the shard exist."""

    shard: int
    first: int  # global index of its first input
    count: int  # inputs in the shard
    embedded: int  # rows of the .npy (the readable images)
    inputs_sha256: str  # digest of the shard's slice of inputs.parquet
    npy: FileRecord
    parquet: FileRecord
    format: int = FORMAT


@dataclass
class Row:
    """What is known about one input after its batch ran."""

    index: int
    path: str
    width: int | None
    height: int | None
    status: str  # "ok" | "error"
    error: str | None


def _show(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 or ":" not in text else text[:19] + "…"


def _load_json(path: Path, what: str) -> dict:
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise CollectionError(f"{path} is too large to be a {what}")
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (OSError, ValueError, RecursionError) as exc:
        raise CollectionError(f"{path} is not a readable {what} ({str(exc)[:160]})") from None


def load_job(folder: Path) -> JobRecord | None:
    """The job record of a collection folder, or None when it has none."""
    path = Path(folder) / RUN_NAME
    if not path.exists():
        return None
    data = _load_json(path, "job record")
    if data.get("format") != FORMAT:
        raise CollectionError(f"{path} is collection format {data.get('format')!r}, this version reads {FORMAT}: "
                              "embed the collection again (into a new --output-dir)")
    try:
        return load_record(JobRecord, data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CollectionError(f"{path} is not a job record ({str(exc)[:160]})") from None


def save_job(folder: Path, job: JobRecord) -> None:
    try:
        write_atomic(Path(folder) / RUN_NAME, json.dumps(dump_record(job), indent=2) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def inputs_digest(table) -> str:
    """sha256 of a slice of inputs.parquet (every column that identifies an input)."""
    digest = hashlib.sha256()
    for column in INPUT_COLUMNS:
        digest.update(json.dumps(table.column(column).to_pylist()).encode())
    return digest.hexdigest()


class ShardStore:
    """The shard files of one collection folder, for writing and for checking."""

    def __init__(self, folder: Path, job: JobRecord):
        self.folder = Path(folder)
        self.job = job
        self.dtype = np.dtype(job.dtype)
        self._inputs_checked = False

    def paths(self, k: int) -> tuple[Path, Path, Path]:
        return tuple(self.folder / n for n in shard_names(k))

    @property
    def shard_count(self) -> int:
        return -(-self.job.total // self.job.shard_size)

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.job.shard_size, min((k + 1) * self.job.shard_size, self.job.total)

    def check_inputs(self) -> None:
        """inputs.parquet must be the one the job record names (sha256) and hold `total` rows."""
        if self._inputs_checked:
            return
        _, pq = pyarrow()
        path, record = self.folder / INPUTS_NAME, self.job.inputs
        if not path.is_file() or path.stat().st_size != record.bytes or sha256_file(path) != record.sha256:
            raise CollectionError(f"{path} is missing or differs from the sha256 in {RUN_NAME}: the collection was "
                                  "changed; embed it again")
        rows = pq.ParquetFile(path).metadata.num_rows
        if rows != self.job.total:
            raise CollectionError(f"{path} lists {rows} inputs, {RUN_NAME} says {self.job.total}: the job record "
                                  "was edited")
        self._inputs_checked = True

    def inputs(self, k: int):
        """Shard k's rows of inputs.parquet (checked), as a pyarrow table in index order."""
        _, pq = pyarrow()
        self.check_inputs()
        lo, hi = self.bounds(k)
        table = pq.read_table(self.folder / INPUTS_NAME, filters=[("index", ">=", lo), ("index", "<", hi)], **READ)
        if table.column("index").to_pylist() != list(range(lo, hi)):
            raise CollectionError(f"{self.folder / INPUTS_NAME} does not list inputs {lo}..{hi - 1} in order")
        return table

    def commit(self, k: int) -> ShardCommit | None:
        """Shard k's commit record when it parses and its files have the recorded sizes (cheap: no hashing)."""
        npy, parquet, record = self.paths(k)
        if not record.is_file():
            return None
        try:
            commit = load_record(ShardCommit, _load_json(record, "shard commit record"))
        except (CollectionError, TypeError, ValueError, KeyError, AttributeError):
            return None
        lo, hi = self.bounds(k)
        sizes = [(p, f.bytes) for p, f in ((npy, commit.npy), (parquet, commit.parquet))]
        if (commit.shard, commit.first, commit.count) != (k, lo, hi - lo) or \
                any(not p.is_file() or p.stat().st_size != size for p, size in sizes):
            return None
        return commit

    def size(self, k: int) -> int:
        """Inputs in shard k."""
        lo, hi = self.bounds(k)
        return hi - lo

    def write(self, k: int, values: np.ndarray, rows: list[Row], inputs) -> None:
        """Write shard k: `.npy`, then `.parquet`, then the commit record (each atomic). `inputs`: the
        shard's slice of inputs.parquet (`inputs(k)`) the rows were embedded from."""
        inputs_sha256 = inputs_digest(inputs)
        pa, pq = pyarrow()
        npy, parquet, record = self.paths(k)
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(values, dtype=self.dtype), allow_pickle=False)
        ok_rows = iter(range(len(values)))
        table = pa.table({
            "index": pa.array([r.index for r in rows], pa.int64()),
            "path": pa.array([r.path for r in rows], pa.string()),
            "width": pa.array([r.width for r in rows], pa.int32()),
            "height": pa.array([r.height for r in rows], pa.int32()),
            "status": pa.array([r.status for r in rows], pa.string()),
            "error": pa.array([r.error for r in rows], pa.string()),
            "row": pa.array([next(ok_rows) if r.status == "ok" else None for r in rows], pa.int32()),
        })
        sink = io.BytesIO()
        pq.write_table(table, sink)
        lo, hi = self.bounds(k)
        files = {}
        try:
            for path, data in ((npy, buffer.getvalue()), (parquet, sink.getvalue())):
                write_atomic(path, data)
                files[path] = FileRecord(path.name, hashlib.sha256(data).hexdigest(), len(data))
            commit = ShardCommit(k, lo, hi - lo, len(values), inputs_sha256, files[npy], files[parquet])
            with atomic_file(record) as fh:
                fh.write((json.dumps(dump_record(commit), indent=2) + "\n").encode())
        except OSError as exc:
            raise OutputError(f"cannot write shard {k} to {self.folder}: {exc.strerror or exc}") from None

    def remove_partial(self) -> None:
        """Temporary files of an interrupted write (never a committed file)."""
        for tmp in self.folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
