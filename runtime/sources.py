"""Where images come from: files, folders (recursive), path lists (text or Parquet) and tar shards.

Everything is enumerated lazily and in a deterministic order, so a collection of any size is
streamed with flat memory and a resumed run sees the same inputs in the same order:
- a folder: walked recursively, names sorted at every level;
- `.txt` / `.lst`: one image path per line, relative paths taken from the list's folder;
- `.parquet`: the `path` column (or `image_path`), read in row batches;
- `.tar`: a webdataset-style shard: every image member, in archive order.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ImageError, UsageError
from .preprocessing import IMAGE_SUFFIXES

LIST_SUFFIXES = (".txt", ".lst")
PARQUET_COLUMNS = ("path", "image_path")
MAX_MEMBER_BYTES = 256 << 20


@dataclass(frozen=True)
class TarMember:
    """One image inside a tar shard, read when it is decoded."""

    tar: Path
    name: str
    offset: int  # of the member's data in the archive
    size: int

    def read_bytes(self) -> bytes:
        if self.size > MAX_MEMBER_BYTES:
            raise ImageError(f"{self} has {self.size} bytes, over the {MAX_MEMBER_BYTES}-byte limit for one image")
        with open(self.tar, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(self.size)
        if len(data) != self.size:
            raise ImageError(f"{self} is truncated ({len(data)} of {self.size} bytes)")
        return data

    def __str__(self) -> str:
        return f"{self.tar}/{self.name}"


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _walk(folder: Path) -> Iterator[Path]:
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif is_image_name(entry.name) and entry.is_file():
            yield Path(entry.path)


def _list_file(path: Path) -> Iterator[Path]:
    base = path.parent
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                yield p if p.is_absolute() else base / p


def _parquet(path: Path) -> Iterator[Path]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"reading {path} needs pyarrow: pip install 'ijepa-deploy[collections]'") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:
        raise ImageError(f"cannot read {path} as Parquet ({str(exc)[:200]})") from None
    column = next((c for c in PARQUET_COLUMNS if c in table.schema_arrow.names), None)
    if column is None:
        raise ImageError(f"{path} has no {' or '.join(PARQUET_COLUMNS)} column (has {table.schema_arrow.names[:8]})")
    base = path.parent
    for batch in table.iter_batches(columns=[column], batch_size=8192):
        for value in batch.column(0).to_pylist():
            if value:
                p = Path(value)
                yield p if p.is_absolute() else base / p


def _tar(path: Path) -> Iterator[TarMember]:
    try:
        with tarfile.open(path, "r:") as archive:  # uncompressed shards: members are read in place
            for member in archive:
                if member.isfile() and is_image_name(member.name):
                    yield TarMember(path, member.name, member.offset_data, member.size)
    except tarfile.TarError as exc:
        raise ImageError(f"cannot read tar shard {path} ({exc}); shards must be uncompressed .tar files") from None


def iter_sources(items: Iterable[str | os.PathLike]) -> Iterator[Path | TarMember]:
    """Every image the inputs name, lazily, in a deterministic order."""
    for item in items:
        path = Path(item)
        if path.is_dir():
            yield from _walk(path)
        elif not path.exists():
            raise ImageError(f"input not found: {path}")
        elif path.suffix.lower() in LIST_SUFFIXES:
            yield from _list_file(path)
        elif path.suffix.lower() == ".parquet":
            yield from _parquet(path)
        elif path.suffix.lower() == ".tar":
            yield from _tar(path)
        else:
            yield path


def expand_sources(items: Iterable[str | os.PathLike]) -> list[Path | TarMember]:
    """All inputs as a list (for in-memory runs); an input that holds no image is an error."""
    out: list[Path | TarMember] = []
    for item in items:
        found = list(iter_sources([item]))
        if not found and Path(item).is_dir():
            raise ImageError(f"folder {item} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if not found:
            raise ImageError(f"{item} lists no images")
        out.extend(found)
    return out
