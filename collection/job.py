"""Opening a collection folder for a job: a new one, or a resumed one that must be the same job.

A new job resolves its inputs, writes inputs.parquet and run.json, and embeds every shard. A resumed
job resolves its inputs again and compares everything that changes the vectors (artifact identity,
precision, the backend's arithmetic, resolution, dtype, shard size, the input list row by row); the
first difference is named and nothing is written. If a new job fails before its first shard is
committed, what it created is removed, so a plain retry starts clean.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ijepa_deploy.contract.atomic import normal_permissions
from ijepa_deploy.contract.errors import CollectionError, OutputError, UsageError
from ijepa_deploy.contract.naming import INPUTS_NAME, RUN_NAME
from ijepa_deploy.contract.shards import JobRecord, ShardStore, load_job, save_job

from .inputs import require_same_inputs, write_inputs


@dataclass(frozen=True)
class JobSpec:
    """What a job embeds with, known before its inputs are resolved."""

    name: str
    artifacts: str
    identity: str
    precision: str
    compute_precision: str
    resolution: tuple[int, int]
    dim: int
    backend: str
    shard_size: int
    dtype: str = "float32"


def check_folder(folder: Path, resume: bool) -> JobRecord | None:
    """Refuse what can be refused before any work; the existing job record when resuming."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--output-dir {folder} exists and is not a folder")
    existing = load_job(folder) if folder.is_dir() else None
    if existing is not None and not resume:
        raise CollectionError(f"{folder} already holds a run ({existing.total} inputs, {existing.precision}); "
                              "pass --resume to continue it, or choose another --output-dir")
    if existing is None and folder.is_dir() and any(p for p in folder.iterdir() if not p.name.startswith(".")):
        raise CollectionError(f"{folder} is not empty and holds no {RUN_NAME}; choose an empty or new --output-dir")
    return existing


def _record(spec: JobSpec, inputs, total: int, given: list[str]) -> JobRecord:
    if spec.shard_size < 1:
        raise UsageError(f"shard size must be a positive integer, got {spec.shard_size}")
    return JobRecord(name=spec.name, artifacts=spec.artifacts, identity=spec.identity, precision=spec.precision,
                     compute_precision=spec.compute_precision, resolution=tuple(spec.resolution), dtype=spec.dtype,
                     dim=spec.dim, shard_size=spec.shard_size, total=total, inputs=inputs, given=tuple(given),
                     backend=spec.backend, cwd=os.getcwd(),
                     created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


@contextmanager
def open_job(folder: Path, spec: JobSpec, given: list[str], resume: bool) -> Iterator[ShardStore]:
    """The shard store of the job, new or resumed (see the module doc)."""
    existing = check_folder(folder, resume)
    made_folder = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None
    fd, name = tempfile.mkstemp(prefix=".inputs.", suffix=".tmp", dir=folder)
    os.close(fd)
    resolved = Path(name)
    created, store = False, None
    try:
        inputs, total = write_inputs(given, resolved)
        normal_permissions(resolved)
        if total == 0:
            raise UsageError("the inputs hold no images")
        job = _record(spec, inputs, total, given)
        if existing is not None:
            difference = existing.first_difference(job)
            if difference:
                raise CollectionError(f"{folder} was written by a different job: {difference}; use another "
                                      "--output-dir, or the same artifact and options to resume")
            store = ShardStore(folder, existing)
            store.check_inputs()  # the recorded list is the one run.json names
            require_same_inputs(folder / INPUTS_NAME, resolved, existing.inputs.sha256 == job.inputs.sha256)
        else:
            os.replace(resolved, folder / INPUTS_NAME)
            save_job(folder, job)
            created = True
            store = ShardStore(folder, job)
        store.remove_partial()
        yield store
    except BaseException:
        if created and store is not None and not any(store.commit(k) for k in range(store.shard_count)):
            (folder / RUN_NAME).unlink(missing_ok=True)
            (folder / INPUTS_NAME).unlink(missing_ok=True)
            if made_folder:
                shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        resolved.unlink(missing_ok=True)
