"""Embedding collections across machines on Ray Data (`pip install 'ijepa-deploy[ray]'`).

    import ray
    from ijepa_deploy.ray import embed_dataset
    ds = ray.data.from_items([{"path": p} for p in paths])          # or a "bytes" column
    out = embed_dataset(ds, "engines/vith14_1k", precision="int8-cpu", batch_size=8)
    # columns: every input column, embedding (D floats), status, error, width, height

Each actor of the pool loads the artifact once (CPU actors, or GPU actors with `num_gpus=1`, which
then run the TensorRT plan recorded for that GPU). Ray Data restarts a dead actor and retries its
tasks without limit (its actor pools default to max_restarts=-1, max_task_retries=-1), and only
completed tasks produce output blocks, so rows are never lost; `ijepa-embed --ray` also
checks, shard by shard, that every input index came back exactly once before it writes the shard
(the same format as the single-machine path: see ijepa_deploy.runtime.shards).

This package's source lives in the repository's `distributed/` folder: a top-level `ray/` folder
would shadow the real `ray` package whenever the repository root is on sys.path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ijepa_deploy.runtime.errors import UsageError, UserError

__all__ = ["EmbedActor", "embed_collection_on_ray", "embed_dataset"]


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("Ray is not installed: pip install 'ijepa-deploy[ray]'") from None
    return ray


class EmbedActor:
    """A Ray Data actor: loads the artifact once, embeds each batch of paths, bytes or tar members."""

    def __init__(self, artifacts: str, precision: str = "fp32", backend: str = "auto", verify: bool = True,
                 batch_size: int | None = None, threads: int | None = None):
        from ijepa_deploy.runtime import Embedder

        self.embedder = Embedder.load(artifacts, precision, backend, verify=verify, threads=threads)
        self.batch_size = batch_size
        self.dim = self.embedder.dim

    def _sources(self, batch: dict) -> list:
        from ijepa_deploy.runtime.sources import TarMember

        if "bytes" in batch:
            return [bytes(b) for b in batch["bytes"]]
        if "path" not in batch:
            raise UsageError(f"embed_dataset needs a 'path' or 'bytes' column (has {sorted(batch)})")
        if "tar" in batch:
            return [TarMember(Path(t), _member(str(p), str(t)), int(o), int(s)) if t else Path(str(p))
                    for p, t, o, s in zip(batch["path"], batch["tar"], batch["offset"], batch["size"])]
        return [Path(str(p)) for p in batch["path"]]

    def __call__(self, batch: dict) -> dict:
        sources = self._sources(batch)
        n = len(sources)
        embedding = np.zeros((n, self.dim), np.float32)
        status, errors = np.array(["ok"] * n, dtype=object), np.array([""] * n, dtype=object)
        width, height = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
        for prepared, values in self.embedder.run_batches(sources, self.batch_size, skip_bad=True):
            rows = iter(values)
            for j, (ok, size, error) in enumerate(zip(prepared.ok, prepared.sizes, prepared.errors)):
                i = prepared.start + j
                if ok:
                    embedding[i] = next(rows)
                    width[i], height[i] = size
                else:
                    status[i], errors[i] = "error", error
        return {**batch, "embedding": embedding, "status": status, "error": errors, "width": width, "height": height}


def _member(path: str, tar: str) -> str:
    prefix = tar + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def embed_dataset(ds, artifacts: str | os.PathLike, *, precision: str = "fp32", backend: str = "auto",
                  batch_size: int | None = None, actors: int = 2, num_cpus: float | None = None,
                  num_gpus: float = 0, verify: bool = True, threads: int | None = None, actor_cls=EmbedActor):
    """Map a Ray Dataset with a `path` (or `bytes`) column through a pool of `actors` Embedders."""
    ray = _ray()
    rows = batch_size or 16
    return ds.map_batches(
        actor_cls, batch_size=rows, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"artifacts": str(artifacts), "precision": precision, "backend": backend,
                               "verify": verify, "batch_size": batch_size, "threads": threads},
        num_cpus=num_cpus if num_cpus is not None else (0.5 if num_gpus else 1), num_gpus=num_gpus)


def connect(address: str, num_cpus: int | None = None):
    """`local` starts a cluster on this machine; anything else is a Ray address (ray://host:10001, auto)."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
        else:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except Exception as exc:
        raise UserError(f"cannot connect to Ray at {address!r}: {str(exc).splitlines()[0][:200]}") from None
    return ray


def embed_collection_on_ray(store, record, address: str, *, batch_size: int | None = None, verify: bool = True,
                            quiet: bool = False, actors: int | None = None, num_gpus: float = 0,
                            actor_cls=EmbedActor) -> None:
    """Write every incomplete shard of `store` with a Ray actor pool; each shard's rows are checked to
    be exactly its inputs, once, before the shard is committed."""
    from ijepa_deploy.runtime.shards import Row, Progress, pending_inputs
    from ijepa_deploy.runtime.sources import TarMember, iter_sources

    ray = connect(address)
    actors = actors or max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
    progress = Progress(record.total, 0) if not quiet else None
    current, items = None, []

    def run_shard(k: int, shard_items: list[dict]) -> None:
        ds = ray.data.from_items(shard_items, override_num_blocks=max(1, min(len(shard_items), actors * 4)))
        out = embed_dataset(ds, record.artifacts, precision=record.precision, backend=record.backend,
                            batch_size=batch_size, actors=actors, num_gpus=num_gpus, verify=verify,
                            actor_cls=actor_cls)
        by_index: dict[int, tuple] = {}
        for batch in out.iter_batches(batch_format="numpy", batch_size=None):
            for j, index in enumerate(batch["index"]):
                by_index.setdefault(int(index), (batch["path"][j], batch["embedding"][j], batch["status"][j],
                                                 batch["error"][j], int(batch["width"][j]), int(batch["height"][j])))
        expected = [item["index"] for item in shard_items]
        missing = [i for i in expected if i not in by_index]
        if missing or len(by_index) != len(expected):
            raise UserError(f"Ray returned {len(by_index)} of shard {k}'s {len(expected)} inputs (first missing: "
                            f"{missing[:3]}); nothing was written for it: resume the run")
        rows, values = [], []
        for i in expected:
            path, vector, status, error, w, h = by_index[i]
            ok = status == "ok"
            rows.append(Row(i, str(path), w if ok else None, h if ok else None, str(status), str(error) if error else None))
            if ok:
                values.append(vector)
        store.write(k, np.stack(values) if values else np.zeros((0, record.dim), np.float32), rows)
        if progress:
            progress.update(len(expected))

    for index, source in pending_inputs(iter_sources(record.inputs), store, record.total):
        shard = index // store.shard_size
        if shard != current and items:
            run_shard(current, items)
            items = []
        current = shard
        item = {"index": index, "path": str(source), "tar": "", "offset": 0, "size": 0}
        if isinstance(source, TarMember):
            item.update(tar=str(source.tar), offset=source.offset, size=source.size)
        items.append(item)
    if items:
        run_shard(current, items)
    if progress:
        progress.close()
