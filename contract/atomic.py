"""Atomic outputs: write to a temporary name beside the target, fsync, rename.

A reader never sees a half-written file, a failed write never destroys the previous good one,
and a group of files (an `.npy` and its sidecar) is replaced together or not at all. Outputs get
the permissions the umask gives a normal file (the temporary file is private until renamed).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, BinaryIO

from .errors import OutputError


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (thread-safe)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_permissions(path: Path | int) -> None:
    """Give a file (path or descriptor) the mode a plain `open(..., "w")` would have given it."""
    os.chmod(path, 0o666 & ~current_umask())


def temp_beside(target: Path, tag: str = "tmp") -> Path:
    """A fresh, hidden temporary file name in the target's folder (same filesystem: rename is atomic)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".{tag}", dir=target.parent)
    os.close(fd)
    return Path(name)


def check_writable(target: Path, what: str = "output") -> None:
    """Fail before any work if `target` cannot be written (missing or read-only folder, a folder in the way)."""
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {what} {target}: folder {folder} does not exist; create it first")
    if target.is_dir():
        raise OutputError(f"cannot write {what} {target}: it is a folder")
    try:
        probe = temp_beside(target, "probe")
    except OSError as exc:
        raise OutputError(f"cannot write {what} to {folder}: {exc.strerror or exc}") from None
    probe.unlink()


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside `target`; on success it is fsynced and renamed onto `target`."""
    target = Path(target)
    tmp = temp_beside(target)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            normal_permissions(fh.fileno())
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_atomic(target: Path, data: bytes | str) -> Path:
    """Write bytes or text to `target` atomically."""
    with atomic_file(target) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return Path(target)


def replace_together(writers: dict[Path, Callable[[BinaryIO], None]]) -> None:
    """Write several files as one unit: all temporaries are written and fsynced first, then renamed
    in order; if a rename fails, the targets already replaced get their previous content back."""
    staged: list[tuple[Path, Path]] = []
    try:
        for target, write in writers.items():
            tmp = temp_beside(target)
            staged.append((tmp, target))
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                normal_permissions(fh.fileno())
                os.fsync(fh.fileno())
    except BaseException as exc:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {staged[-1][1] if staged else 'output'}: {exc.strerror or exc}; "
                              "nothing was replaced") from None
        raise
    backups: list[tuple[Path, Path | None]] = []
    try:
        for tmp, target in staged:
            backup = None
            if target.exists():
                backup = temp_beside(target, "previous")
                backup.unlink()
                try:
                    os.link(target, backup)  # the target stays readable until it is replaced
                except OSError:
                    os.replace(target, backup)
            backups.append((target, backup))
            os.replace(tmp, target)
    except BaseException:
        for target, backup in reversed(backups):
            if backup is not None:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for _, backup in backups:
        if backup is not None:
            backup.unlink(missing_ok=True)
    for folder in {t.parent for _, t in staged}:
        fsync_dir(folder)
