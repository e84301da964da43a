"""What we read from disk is checked: sha256 of files, and file names confined to their folder."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .errors import IntegrityError, ManifestError

_CHUNK = 1 << 22
# A plain file name: no folder part, no hidden name, nothing a shell or a path could misread.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$")


def sha256_file(path: str | os.PathLike, digest=None) -> str:
    """Hex sha256 of a file, streamed in 4 MiB chunks (pass `digest` to hash several files as one)."""
    own = digest is None
    digest = digest or hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest() if own else ""


def sha256_files(paths: list[Path]) -> str:
    """One sha256 over several files read in order (a sharded checkpoint)."""
    digest = hashlib.sha256()
    for path in paths:
        sha256_file(path, digest)
    return digest.hexdigest()


def is_plain_name(name: object) -> bool:
    return isinstance(name, str) and bool(_PLAIN_NAME.match(name)) and ".." not in name


def confined(folder: Path, name: str, what: str = "file") -> Path:
    """`folder / name` for a plain file name that stays inside `folder` (symlinks resolved)."""
    if not is_plain_name(name):
        raise ManifestError(f"{what} name {name!r} in {folder} is not a plain file name inside the folder")
    path = folder / name
    root = folder.resolve()
    if path.resolve().parent != root:
        raise ManifestError(f"{what} {name!r} in {folder} points outside the folder ({path.resolve()})")
    return path


def verify_file(path: Path, sha256: str, size: int) -> None:
    """Raise IntegrityError unless `path` is a regular file of `size` bytes with `sha256`."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IntegrityError(f"{path} is missing; the artifact folder is incomplete: copy it again or re-export") from None
    if not path.is_file():
        raise IntegrityError(f"{path} is not a regular file")
    if st.st_size != size:
        raise IntegrityError(f"{path} has {st.st_size} bytes, the manifest recorded {size}: the file was changed or "
                             "truncated; copy the artifact folder again or re-export")
    actual = sha256_file(path)
    if actual != sha256:
        raise IntegrityError(f"{path} does not match its sha256 in manifest.json (got {actual[:12]}…, recorded "
                             f"{sha256[:12]}…): the file is corrupted or was replaced; copy the artifact folder again "
                             "or re-export (verify=False / --no-verify skips this check)")
