"""The input list of a collection job: resolved once, written to inputs.parquet, embedded exactly.

Each argument is walked once (files, folders, path lists, tar shards; see runtime.sources) into one
row per input: its index, the argument it came from as given, its absolute path, its tar member and
data offset, its size and mtime, or why it cannot be read. A resumed run resolves its arguments
again and must get the same rows; the first row that differs is named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from ijepa_deploy.contract.errors import CollectionError, UsageError
from ijepa_deploy.contract.manifest import FileRecord
from ijepa_deploy.contract.naming import INPUTS_NAME
from ijepa_deploy.contract.shards import INPUT_COLUMNS, READ, pyarrow
from ijepa_deploy.runtime.sources import BadInput, FileSource, Source, TarMember, iter_sources

BATCH_ROWS = 8192


def source_row(index: int, given: str, source: Source) -> dict:
    row = dict.fromkeys(INPUT_COLUMNS)
    row.update(index=index, given=given)
    if isinstance(source, FileSource):
        row.update(path=str(source.path), size=source.size, mtime_ns=source.mtime_ns)
    elif isinstance(source, TarMember):
        row.update(path=str(source.tar), member=source.name, offset=source.offset, size=source.size,
                   mtime_ns=source.tar_mtime_ns)
    else:
        row.update(path=source.name, error=source.error)
    return row


def row_source(row: dict) -> Source:
    """The source a row of inputs.parquet describes (reading it checks the file did not change)."""
    if row["error"] is not None:
        return BadInput(row["path"], row["error"])
    if row["member"] is not None:
        return TarMember(Path(row["path"]), row["member"], row["offset"], row["size"], row["mtime_ns"])
    return FileSource(Path(row["path"]), row["size"], row["mtime_ns"])


def _schema(pa):
    return pa.schema([("index", pa.int64()), ("given", pa.string()), ("path", pa.string()), ("member", pa.string()),
                      ("offset", pa.int64()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("error", pa.string())])


def resolve_rows(given: Iterable[str]) -> Iterator[dict]:
    index = 0
    for argument in given:
        for source in iter_sources([argument]):
            yield source_row(index, argument, source)
            index += 1


def write_inputs(given: list[str], target: Path) -> tuple[FileRecord, int]:
    """Resolve `given` into the Parquet file `target` (streamed: flat memory); (its record, input count)."""
    pa, pq = pyarrow()
    schema, total, batch = _schema(pa), 0, []
    try:
        with pq.ParquetWriter(target, schema) as writer:
            for row in resolve_rows(given):
                batch.append(row)
                total += 1
                if len(batch) == BATCH_ROWS:
                    writer.write_table(pa.Table.from_pylist(batch, schema))
                    batch = []
            writer.write_table(pa.Table.from_pylist(batch, schema))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return FileRecord.of(target, INPUTS_NAME), total  # target becomes INPUTS_NAME


def first_difference(a, b) -> str:
    """Where two input lists (pyarrow tables: recorded, resolved) first differ, in words (same count: a row;
    else the counts)."""
    for i, (old, new) in enumerate(zip(a.to_pylist(), b.to_pylist())):
        if old != new:
            what = next(k for k in INPUT_COLUMNS if old[k] != new[k])
            return (f"input {i} ({what}) is {new[what]!r} now, {old[what]!r} in the collection "
                    f"(from argument {new['given']!r})")
    return f"the inputs hold {b.num_rows} images now, {a.num_rows} in the collection"


def check_given(given: Iterable) -> list[str]:
    """The arguments as strings; anything that is not a path is refused before any work."""
    out = []
    for item in given:
        if not isinstance(item, (str, os.PathLike)):
            raise UsageError(f"input {item!r} is not a path")
        out.append(os.fspath(item))
    if not out:
        raise UsageError("no inputs given")
    return out


def sources_of(table) -> list[Source]:
    return [row_source(row) for row in table.to_pylist()]


def require_same_inputs(recorded: Path, resolved: Path, same_bytes: bool) -> None:
    """Refuse, naming the first difference, unless both lists hold the same rows (`same_bytes`: their
    recorded sha256 agree, and `recorded` was checked against its record)."""
    if same_bytes:
        return
    _, pq = pyarrow()
    a, b = pq.read_table(recorded, **READ), pq.read_table(resolved, **READ)
    if a.equals(b):
        return
    raise CollectionError(f"{recorded.parent} was written for other inputs: {first_difference(a, b)}; "
                          "use another --output-dir, or the same inputs to resume")
