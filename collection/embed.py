"""`embed_collection`: a collection job, on this machine or on a Ray cluster.

    from ijepa_deploy.collection import embed_collection
    embed_collection(["photos/", "list.txt", "shard-000.tar"], "emb/", "engines/vith14_1k",
                     precision="int8-cpu", shard_size=10000, resume=True)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from ijepa_deploy.contract.errors import UsageError
from ijepa_deploy.contract.shards import pyarrow
from ijepa_deploy.runtime.config import EmbedConfig
from ijepa_deploy.runtime.embedder import Embedder

from .inputs import check_given
from .job import check_folder, open_job
from .shard_writer import Progress, job_spec, write_shards

log = logging.getLogger(__name__)


def embed_collection(images: Iterable[str], output_dir: str | Path, artifacts: str | Path, *,
                     config: EmbedConfig | None = None, shard_size: int = 10000, resume: bool = False,
                     dtype: str = "float32", ray_address: str | None = None, actors: int | None = None,
                     progress: Progress | None = None, **options) -> Path:
    """Embed every input into shards under `output_dir` (see contract.shards); returns the folder.
    `options` are EmbedConfig fields (precision, backend, batch_size, threads, ...) or pass `config`."""
    given = check_given(images)
    pyarrow()
    if dtype not in ("float32", "float16"):
        raise UsageError(f"dtype must be float32 or float16, got {dtype!r}")
    config = config or EmbedConfig(**options)
    folder = Path(output_dir)
    check_folder(folder, resume)  # refuse before loading anything
    if ray_address:
        from .ray_executor import embed_collection_on_ray

        return embed_collection_on_ray(given, folder, artifacts, config, shard_size=shard_size, resume=resume,
                                       dtype=dtype, address=ray_address, actors=actors, progress=progress)
    with Embedder.load(artifacts, config=config) as embedder:
        with open_job(folder, job_spec(embedder, artifacts, shard_size, dtype), given, resume) as store:
            done = write_shards(embedder, store, progress)
    log.info("wrote %d shard(s) of %d inputs to %s (%d embedded now)", store.shard_count, store.job.total, folder, done)
    return folder
