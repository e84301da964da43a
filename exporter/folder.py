"""The export's folder transaction: all or nothing, one export per name at a time.

Everything is written into a hidden temporary folder beside the destination, named after the
process that owns it; an exclusive lock per artifact name keeps a second export of the same name
out. Only when every artifact passed its checks and gates is the folder renamed into place (never
over an existing folder without `overwrite`). A failure, Ctrl-C or SIGTERM removes the temporary
folder; one left by a killed process (SIGKILL) is removed by the next export into the same folder.
The lock file is removed when the export ends, so no file is left beside the artifact folders.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ijepa_deploy.contract.atomic import current_umask
from ijepa_deploy.contract.naming import MANIFEST_NAME

from .errors import ExportError

log = logging.getLogger(__name__)
PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.partial$")
OWNER = ".owner.json"


def check_destination(final: Path, overwrite: bool) -> None:
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise ExportError(f"{final} exists and is not a folder; remove it or choose another --name")
    if final.exists():
        if not overwrite:
            raise ExportError(f"{final} already exists; pass --overwrite to replace it or --name to export beside it")
        if not (final / MANIFEST_NAME).is_file():
            raise ExportError(f"{final} exists but is not an ijepa-export artifact folder (no manifest.json); "
                              "--overwrite only replaces artifact folders: remove it yourself or choose another --name")


def _unwritable(output_dir: Path, exc: OSError) -> ExportError:
    return ExportError(f"output folder {output_dir} is not writable ({exc.strerror or exc}); "
                       "choose another with --output-dir")


@contextmanager
def export_lock(output_dir: Path, name: str) -> Iterator[None]:
    """An exclusive lock per artifact name, held for the whole export (the kernel releases it when the
    process dies). The lock file is unlinked by its holder at the end; a waiter that locked a file
    already unlinked (or replaced) sees the inode changed and tries again, so two holders never meet."""
    path = output_dir / f".{name}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _unwritable(output_dir, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ExportError(f"another export into {output_dir / name} is running; wait for it or use another "
                              "--name") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            path.unlink()
        finally:
            os.close(fd)


def _process_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def make_partial(output_dir: Path, name: str) -> Path:
    """The hidden work folder of this process's export of `name`."""
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".partial", dir=output_dir))
    except OSError as exc:
        raise _unwritable(output_dir, exc) from None
    (work / OWNER).write_text(json.dumps({"pid": os.getpid(), "start": _process_start(os.getpid()),
                                          "host": platform.node()}))
    return work


def remove_stale_partials(output_dir: Path) -> list[Path]:
    """Remove our own temporary folders whose process is gone (a SIGKILLed export)."""
    removed = []
    for path in output_dir.iterdir():
        m = PARTIAL.match(path.name)
        if not m or not path.is_dir() or path.is_symlink():
            continue
        try:
            owner = json.loads((path / OWNER).read_text())
        except (OSError, ValueError):
            owner = {"pid": int(m["pid"]), "start": None, "host": platform.node()}
        if owner.get("host") != platform.node():
            continue  # a shared folder: another machine's export may be alive
        start = _process_start(int(owner.get("pid", m["pid"])))
        if start is None or owner.get("start") not in (None, start):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("  removed %d stale temporary folder(s) of killed exports: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def normal_permissions(folder: Path) -> None:
    """mkdtemp makes 0700: give everything the umask's normal permissions so the folder can be
    deployed to another user (Triton, a service)."""
    umask = current_umask()
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod((0o777 if os.access(path, os.X_OK) else 0o666) & ~umask)


def move_into_place(work: Path, final: Path, overwrite: bool) -> None:
    """Rename under the export lock; an existing folder is only replaced with `overwrite`."""
    (work / OWNER).unlink(missing_ok=True)
    normal_permissions(work)
    if not final.exists():
        os.rename(work, final)
        return
    if not overwrite:  # appeared although we hold the lock: someone bypassed it
        raise ExportError(f"{final} appeared during the export; nothing was replaced")
    trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".partial", dir=final.parent))
    os.rmdir(trash)
    os.rename(final, trash)
    try:
        os.rename(work, final)
    except BaseException:
        os.rename(trash, final)
        raise
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def export_transaction(output_dir: Path, name: str, overwrite: bool) -> Iterator[Path]:
    """Yield the work folder of an export of `name`; on success it becomes `output_dir/name`, on any
    failure (or Ctrl-C, SIGTERM) it is removed."""
    final = output_dir / name
    check_destination(final, overwrite)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(output_dir, exc) from None
    remove_stale_partials(output_dir)
    with export_lock(output_dir, name):
        check_destination(final, overwrite)
        work = make_partial(output_dir, name)
        try:
            yield work
            move_into_place(work, final, overwrite)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
