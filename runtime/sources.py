"""Where images come from: files, folders (recursive), path lists (text or Parquet) and tar shards.

Every input is resolved once into a source that knows what it read: a file (absolute path, size,
mtime), a tar member (archive, member name, data offset, size), or a bad input (why it cannot be
read: a symlink loop, a special file, a null or non-string path in a list, a missing file). A bad
input is an error row at its index, never an abort and never a gap; a source whose file changed
after it was resolved refuses to be read. Everything is enumerated lazily and in a deterministic order:
- a folder: walked recursively, names sorted at every level; symlinked folders are followed,
  except back into a folder already being walked (a loop);
- `.txt` / `.lst`: one image path per line, relative paths taken from the list's folder;
- `.parquet`: the `path` column (or `image_path`), read in row batches;
- `.tar`: a webdataset-style shard: every image member, in archive order (hard links resolved
  to the member they name).
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Union

from ijepa_deploy.contract.errors import ImageError, UsageError

from .preprocessing import IMAGE_SUFFIXES, read_regular_file

LIST_SUFFIXES = (".txt", ".lst")
PARQUET_COLUMNS = ("path", "image_path")
MAX_MEMBER_BYTES = 256 << 20


@dataclass(frozen=True)
class FileSource:
    """An image file as it was when the inputs were resolved."""

    path: Path  # absolute
    size: int
    mtime_ns: int

    def read_bytes(self) -> bytes:
        data = read_regular_file(self.path)
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        if st is None or st.st_size != self.size or st.st_mtime_ns != self.mtime_ns or len(data) != self.size:
            raise ImageError(f"{self.path} changed after the inputs were resolved (size or modification time); "
                             "embed it in a new run")
        return data

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class TarMember:
    """One image inside a tar shard, read when it is decoded."""

    tar: Path
    name: str
    offset: int  # of the member's data in the archive
    size: int
    tar_mtime_ns: int | None = None  # the archive's, when resolved: a replaced archive is refused

    def read_bytes(self) -> bytes:
        if self.size > MAX_MEMBER_BYTES:
            raise ImageError(f"{self} has {self.size} bytes, over the {MAX_MEMBER_BYTES}-byte limit for one image")
        try:
            with open(self.tar, "rb") as fh:
                if self.tar_mtime_ns is not None and os.fstat(fh.fileno()).st_mtime_ns != self.tar_mtime_ns:
                    raise ImageError(f"{self.tar} changed after the inputs were resolved; embed it in a new run")
                fh.seek(self.offset)
                data = fh.read(self.size)
        except OSError as exc:
            raise ImageError(f"cannot read {self}: {exc.strerror or exc}") from None
        if len(data) != self.size:
            raise ImageError(f"{self} is truncated ({len(data)} of {self.size} bytes)")
        return data

    def __str__(self) -> str:
        return f"{self.tar}/{self.name}"


@dataclass(frozen=True)
class BadInput:
    """An input that cannot be read; reading it raises its reason (an error row at its index)."""

    name: str
    error: str

    def read_bytes(self) -> bytes:
        raise ImageError(self.error)

    def __str__(self) -> str:
        return self.name


Source = Union[FileSource, TarMember, BadInput]


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def file_source(path: Path) -> Source:
    """A regular file as a source, or the reason it is not one."""
    absolute = Path(os.path.abspath(path))
    try:
        st = os.stat(absolute)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return BadInput(str(absolute), f"{absolute} is a symlink loop")
        if os.path.islink(absolute):
            return BadInput(str(absolute), f"{absolute} is a broken symlink")
        return BadInput(str(absolute), f"image not found: {absolute}" if exc.errno == errno.ENOENT
                        else f"cannot open image {absolute}: {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode):
        return BadInput(str(absolute), f"{absolute} is not a regular file; only image files are read")
    return FileSource(absolute, st.st_size, st.st_mtime_ns)


def _walk(folder: Path, ancestors: frozenset = frozenset()) -> Iterator[Source]:
    st = os.stat(folder)
    here = ancestors | {(st.st_dev, st.st_ino)}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        yield BadInput(str(folder), f"cannot list folder {folder}: {exc.strerror or exc}")
        return
    for entry in entries:
        path = Path(os.path.abspath(entry.path))
        if _is_dir(entry):
            target = os.stat(path)
            if (target.st_dev, target.st_ino) in here:
                yield BadInput(str(path), f"{path} links back to a folder being walked (a symlink loop); skipped")
            else:
                yield from _walk(path, here)
        elif is_image_name(entry.name):
            yield file_source(path)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:  # a symlink loop: reported as a file input if it has an image name
        return False


def _list_file(path: Path) -> Iterator[Source]:
    base = path.parent
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    p = Path(line)
                    yield file_source(p if p.is_absolute() else base / p)
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a UTF-8 text list of paths") from None


def _parquet(path: Path) -> Iterator[Source]:
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
    base, row = path.parent, 0
    for batch in table.iter_batches(columns=[column], batch_size=8192):
        for value in batch.column(0).to_pylist():
            where = f"{path} row {row}"
            if value is None:
                yield BadInput(where, f"{where}: the {column} is null")
            elif not isinstance(value, str) or not value:
                yield BadInput(where, f"{where}: the {column} is {value!r}, not a path")
            else:
                p = Path(value)
                yield file_source(p if p.is_absolute() else base / p)
            row += 1


def _tar(path: Path) -> Iterator[Source]:
    path = Path(os.path.abspath(path))
    mtime = os.stat(path).st_mtime_ns
    regular: dict[str, tarfile.TarInfo] = {}
    try:
        with tarfile.open(path, "r:") as archive:  # uncompressed shards: members are read in place
            for member in archive:
                if member.isfile():
                    regular[member.name] = member
                if not is_image_name(member.name) or not (member.isfile() or member.islnk()):
                    continue
                target = member if member.isfile() else regular.get(member.linkname)
                if target is None:
                    yield BadInput(f"{path}/{member.name}", f"{path}/{member.name} is a hard link to "
                                                            f"{member.linkname!r}, which the archive does not hold")
                else:
                    yield TarMember(path, member.name, target.offset_data, target.size, mtime)
    except tarfile.TarError as exc:
        raise ImageError(f"cannot read tar shard {path} ({exc}); shards must be uncompressed .tar files") from None


def iter_sources(items: Iterable[str | os.PathLike]) -> Iterator[Source]:
    """Every image the inputs name, lazily, in a deterministic order. An argument that does not exist
    is a usage error (before any work); anything unreadable inside one is a BadInput."""
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise UsageError(f"input {item!r} is not a path")
        path = Path(item)
        if path.is_dir():
            yield from _walk(Path(os.path.abspath(path)))
        elif not os.path.lexists(path):
            raise ImageError(f"input not found: {path}")
        elif path.suffix.lower() in LIST_SUFFIXES:
            yield from _list_file(path)
        elif path.suffix.lower() == ".parquet":
            yield from _parquet(path)
        elif path.suffix.lower() == ".tar":
            yield from _tar(path)
        else:
            yield file_source(path)


def expand_sources(items: Iterable[str | os.PathLike]) -> list[Source]:
    """All inputs as a list (for in-memory runs); an input that holds no image is an error."""
    out: list[Source] = []
    for item in items:
        found = list(iter_sources([item]))
        if not found and Path(item).is_dir():
            raise ImageError(f"folder {item} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if not found:
            raise ImageError(f"{item} lists no images")
        out.extend(found)
    return out
