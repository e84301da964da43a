"""Embedding collections across machines on Ray Data (`pip install 'ijepa-deploy[ray]'`).

    import ray
    from ijepa_deploy.collection import embed_dataset
    ds = ray.data.from_items([{"path": p} for p in paths])          # or a "bytes" column
    out = embed_dataset(ds, "engines/vith14_1k", precision="int8-cpu", batch_size=8)
    # columns: every input column, embedding (D floats), status, error, width, height, identity

Each actor of the pool loads the artifact once with the job's whole `EmbedConfig` (CPU actors, or
GPU actors with `num_gpus=1`, which then run the TensorRT plan recorded for that GPU) and stamps
every row with the identity and arithmetic of what it ran. Ray Data restarts a dead actor and
retries its tasks (its actor pools default to max_restarts=-1, max_task_retries=-1), and only
completed tasks produce output blocks; `ijepa-embed --ray` also checks, shard by shard, that every
input index came back exactly once, from the job's artifact, before it commits the shard (the same
format as the single-machine path: see contract.shards).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.errors import CollectionError, UsageError, UserError
from ijepa_deploy.contract.manifest import Manifest
from ijepa_deploy.contract.shards import Row, ShardStore
from ijepa_deploy.runtime.config import EmbedConfig
from ijepa_deploy.runtime.sources import BadInput

from .inputs import row_source
from .job import JobSpec, open_job
from .shard_writer import Progress, pending_shards

__all__ = ["EmbedActor", "embed_collection_on_ray", "embed_dataset"]
log = logging.getLogger(__name__)
SOURCE_COLUMNS = ("path", "member", "offset", "size", "mtime_ns", "error")


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("Ray is not installed: pip install 'ijepa-deploy[ray]'") from None
    return ray


class EmbedActor:
    """A Ray Data actor: loads the artifact once, embeds each batch of paths, bytes or resolved inputs."""

    def __init__(self, artifacts: str, config: EmbedConfig):
        from ijepa_deploy.runtime import Embedder

        self.embedder = Embedder.load(artifacts, config=config)
        self.stamp = f"{self.embedder.identity} {self.embedder.backend.compute_precision}"

    def _sources(self, batch: dict) -> list:
        if "bytes" in batch:
            return [bytes(b) for b in batch["bytes"]]
        if "path" not in batch:
            raise UsageError(f"embed_dataset needs a 'path' or 'bytes' column (has {sorted(batch)})")
        if all(c in batch for c in SOURCE_COLUMNS):  # rows of a collection's inputs.parquet
            return [row_source({c: _plain(batch[c][i]) for c in SOURCE_COLUMNS}) for i in range(len(batch["path"]))]
        return [_path_source(p) for p in batch["path"]]

    def __call__(self, batch: dict) -> dict:
        sources = self._sources(batch)
        n = len(sources)
        embedding = np.zeros((n, self.embedder.dim), np.float32)
        status, errors = np.array(["ok"] * n, dtype=object), np.array([""] * n, dtype=object)
        width, height = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
        for prepared, values in self.embedder.run_batches(sources, skip_bad=True):
            rows = iter(values)
            for j, (ok, size, error) in enumerate(zip(prepared.ok, prepared.sizes, prepared.errors)):
                i = prepared.start + j
                if ok:
                    embedding[i] = next(rows)
                    width[i], height[i] = size
                else:
                    status[i], errors[i] = "error", error
        return {**batch, "embedding": embedding, "status": status, "error": errors, "width": width,
                "height": height, "identity": np.array([self.stamp] * n, dtype=object)}


def _plain(value):
    """numpy scalars and NaN-filled nulls from Ray's numpy batches back to Python values."""
    value = value.item() if hasattr(value, "item") else value
    return None if value is None or (isinstance(value, float) and value != value) else value


def _path_source(value):
    if value is None or not isinstance(value, (str, bytes, os.PathLike)) or value == "":
        return BadInput(repr(value), f"the path is {value!r}, not a path")
    return Path(os.fsdecode(value))


def embed_dataset(ds, artifacts: str | os.PathLike, *, config: EmbedConfig | None = None, actors: int = 2,
                  num_cpus: float | None = None, num_gpus: float = 0, rows_per_task: int | None = None,
                  actor_cls=EmbedActor, **options):
    """Map a Ray Dataset with a `path` (or `bytes`) column through a pool of `actors` Embedders.
    `options` are EmbedConfig fields (precision, backend, batch_size, threads, resolution, ...)."""
    ray = _ray()
    config = config or EmbedConfig(**options)
    return ds.map_batches(
        actor_cls, batch_size=rows_per_task or config.batch_size or 16, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"artifacts": str(artifacts), "config": config},
        num_cpus=num_cpus if num_cpus is not None else (0.5 if num_gpus else 1), num_gpus=num_gpus)


def connect(address: str, num_cpus: int | None = None):
    """`local` starts a cluster on this machine; anything else is a Ray address (ray://host:10001, auto).
    Ray's own log lines and warnings are kept out of the user's terminal; a failure is one line."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "ignore_reinit_error": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if address == "local":
                ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
            else:
                ray.init(address=address, **quiet)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise UserError(f"cannot connect to Ray at {address!r}: {(text[0] if text else type(exc).__name__)[:200]}") \
            from None
    return ray


def ray_job_spec(artifacts: str | Path, config: EmbedConfig, shard_size: int, dtype: str) -> JobSpec:
    """The job record's facts as the driver knows them: the manifest's identity; the arithmetic the
    actors must report (OpenVINO's bf16 where the artifact was gated for it, else as the file says)."""
    manifest = Manifest.load(artifacts)
    art = manifest.artifact(config.precision)
    compute = "bf16" if art.inference_precision == "bf16" else "file"
    if config.backend == "openvino" and art.openvino_precision == "bf16":
        compute = "bf16"
    pre = manifest.preprocessing
    return JobSpec(name=manifest.name, artifacts=str(Path(artifacts).resolve()), identity=art.identity,
                   precision=config.precision, compute_precision=compute,
                   resolution=config.resolution or (pre.height, pre.width), dim=manifest.hidden_size,
                   backend=f"ray ({config.backend})", shard_size=shard_size, dtype=dtype)


def embed_collection_on_ray(given: list[str], folder: Path, artifacts: str | Path, config: EmbedConfig, *,
                            shard_size: int, resume: bool, dtype: str, address: str, actors: int | None = None,
                            num_gpus: float = 0, progress: Progress | None = None, actor_cls=EmbedActor) -> Path:
    """Write every incomplete shard of the job with a Ray actor pool; each shard's rows are checked to
    be exactly its inputs, once, from the job's artifact, before the shard is committed."""
    ray = connect(address)  # before anything is written: a failed connect leaves nothing behind
    spec = ray_job_spec(artifacts, config, shard_size, dtype)
    actors = actors or max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
    with open_job(folder, spec, given, resume) as store:
        pending = pending_shards(store)
        done = store.job.total - sum(store.size(k) for k in pending)
        for k in pending:
            _run_shard(ray, store, k, artifacts, config, actors, num_gpus, actor_cls)
            done += store.size(k)
            if progress:
                progress(done, store.job.total)
    log.info("wrote %d shard(s) of %d inputs to %s on Ray at %s", store.shard_count, store.job.total, folder, address)
    return folder


def _run_shard(ray, store: ShardStore, k: int, artifacts, config: EmbedConfig, actors: int, num_gpus: float,
               actor_cls) -> None:
    table = store.inputs(k)
    items = table.to_pylist()
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), actors * 4)))
    out = embed_dataset(ds, artifacts, config=config, actors=actors, num_gpus=num_gpus, actor_cls=actor_cls)
    expected_stamp = f"{store.job.identity} {store.job.compute_precision}"
    by_index: dict[int, tuple] = {}
    for batch in out.iter_batches(batch_format="numpy", batch_size=None):
        for j, index in enumerate(batch["index"]):
            if batch["identity"][j] != expected_stamp:
                raise CollectionError(f"a Ray actor embedded input {int(index)} with {batch['identity'][j]}, the job "
                                      f"is {expected_stamp}: pin --backend so every worker computes alike")
            by_index.setdefault(int(index), (batch["embedding"][j], batch["status"][j], batch["error"][j],
                                             int(batch["width"][j]), int(batch["height"][j])))
    expected = [row["index"] for row in items]
    missing = [i for i in expected if i not in by_index]
    if missing or len(by_index) != len(expected):
        raise CollectionError(f"Ray returned {len(by_index)} of shard {k}'s {len(expected)} inputs (first missing: "
                              f"{missing[:3]}); nothing was written for it: resume the run")
    rows, values = [], []
    for row in items:
        vector, status, error, w, h = by_index[row["index"]]
        ok = status == "ok"
        path = f"{row['path']}/{row['member']}" if row["member"] else row["path"]
        rows.append(Row(row["index"], path, w if ok else None, h if ok else None, str(status),
                        str(error) if error else None))
        if ok:
            values.append(vector)
    store.write(k, np.stack(values) if values else np.zeros((0, store.job.dim), np.float32), rows, table)
