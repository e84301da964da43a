"""`ijepa-index`: search what `ijepa-embed --output-dir` wrote (`pip install 'ijepa-deploy[index]'`).

    ijepa-index build emb/                     # exact inner product on normalised vectors (small collections)
    ijepa-index build emb/ --kind ivfpq        # IVF-PQ beyond --exact-below vectors; recall@10 vs exact reported
    ijepa-index query --artifacts engines/vith14_1k --index emb/ cat.jpg -k 10

The index is built shard by shard (IVF-PQ is trained on a sample first), written atomically beside
the shards with a record of how it was made and its measured recall, and refused at query time if
the query artifact is not the one the collection was embedded with.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

from .atomic import write_atomic
from .errors import UsageError, UserError, click_entry, run_cli

INDEX_NAME, RECORD_NAME = "index.faiss", "index.json"
EXACT_BELOW = 100_000


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UsageError("ijepa-index needs FAISS: pip install 'ijepa-deploy[index]'") from None
    return faiss


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _shards(folder: Path):
    """(embeddings, paths) per shard, in input order, readable images only."""
    from .shards import iter_shards

    for values, paths, _ in iter_shards(folder):
        yield values, paths


def _pick_pq(dim: int) -> int:
    """The largest sub-quantizer count <= dim / 4 that divides dim (8-bit codes of >= 4 dimensions:
    1280-d float32 embeddings shrink 16x)."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def build_index(folder: Path, kind: str = "auto", *, exact_below: int = EXACT_BELOW, nlist: int | None = None,
                pq_m: int | None = None, nprobe: int = 32, recall_queries: int = 200, seed: int = 0) -> dict:
    """Build `folder/index.faiss` from the collection; returns its record (with recall@10 vs exact)."""
    faiss = _faiss()
    from .shards import load_run

    run = load_run(folder)
    if run is None:
        raise UserError(f"{folder} has no run.json: not an ijepa-embed --output-dir folder")
    count = 0
    paths: list[str] = []
    sample: list[np.ndarray] = []
    for values, shard_paths in _shards(folder):
        count += len(values)
        paths += shard_paths
        if sum(len(s) for s in sample) < 100_000:
            sample.append(normalise(values))
    if count == 0:
        raise UserError(f"{folder} holds no embeddings")
    kind = ("flat" if count < exact_below else "ivfpq") if kind == "auto" else kind
    dim = run.dim
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        params = {}
    elif kind == "ivfpq":
        nlist = nlist or max(1, min(int(4 * math.sqrt(count)), count // 39))
        pq_m = pq_m or _pick_pq(dim)
        if dim % pq_m:
            raise UsageError(f"--pq-m {pq_m} must divide the embedding size {dim}")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        train = np.concatenate(sample)
        if len(train) < max(nlist * 39, 256):
            raise UsageError(f"IVF-PQ with {nlist} lists needs at least {max(nlist * 39, 256)} training vectors, "
                             f"the collection has {len(train)}; use --kind flat or a smaller --nlist")
        index.train(train)
        index.nprobe = min(nprobe, nlist)
        params = {"nlist": nlist, "pq_m": pq_m, "bits": 8, "nprobe": index.nprobe}
    else:
        raise UsageError(f"--kind must be auto, flat or ivfpq, got {kind!r}")
    for values, _ in _shards(folder):
        if len(values):
            index.add(normalise(values))
    record = {"kind": kind, "vectors": count, "dim": dim, "metric": "inner product on L2-normalised embeddings",
              "artifact_sha256": run.artifact_sha256, "precision": run.precision, **params}
    if kind != "flat":
        record["recall_at_10"] = _recall(index, sample, recall_queries, seed)
    _save(folder, index, record, paths)
    return record


def _recall(index, sample: list[np.ndarray], queries: int, seed: int) -> float:
    """recall@10 of `index` against exact search, on database vectors used as queries."""
    faiss = _faiss()
    data = np.concatenate(sample)
    exact = faiss.IndexFlatIP(data.shape[1])
    exact.add(data)
    rng = np.random.default_rng(seed)
    q = data[rng.choice(len(data), size=min(queries, len(data)), replace=False)]
    k = min(10, len(data))
    _, truth = exact.search(q, k)
    _, got = index.search(q, k)
    # the sample is the first vectors of the collection, so its ids are the index's ids
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, got)]))


def _save(folder: Path, index, record: dict, paths: list[str]) -> None:
    faiss = _faiss()
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".index.", suffix=".tmp", delete=False) as tmp:
        name = tmp.name
    try:
        faiss.write_index(index, name)
        data = Path(name).read_bytes()
    finally:
        Path(name).unlink(missing_ok=True)
    write_atomic(folder / INDEX_NAME, data)
    write_atomic(folder / RECORD_NAME, json.dumps({**record, "paths": paths}) + "\n")


def query(folder: Path, artifacts: str, images: list[str], k: int = 10, *, precision: str | None = None,
          backend: str = "auto", verify: bool = True) -> list[tuple[str, list[tuple[str, float]]]]:
    """(query image, its k nearest collection images with cosine scores) for each query image."""
    faiss = _faiss()
    from .embedder import Embedder
    from .sources import expand_sources

    record_path, index_path = folder / RECORD_NAME, folder / INDEX_NAME
    if not record_path.is_file() or not index_path.is_file():
        raise UserError(f"{folder} has no index; build it with `ijepa-index build {folder}`")
    record = json.loads(record_path.read_text())
    with Embedder.load(artifacts, precision or record["precision"], backend, verify=verify) as embedder:
        art = embedder.manifest.artifact(embedder.precision)
        if art.files[0].sha256 != record["artifact_sha256"]:
            raise UserError(f"{artifacts} ({embedder.precision}) is not the artifact {folder} was embedded with: "
                            "its vectors would not be comparable")
        sources = expand_sources(images)
        vectors = normalise(embedder.embed(sources))
    index = faiss.read_index(str(index_path))
    if hasattr(index, "nprobe") and "nprobe" in record:
        index.nprobe = record["nprobe"]
    scores, ids = index.search(vectors, min(k, record["vectors"]))
    return [(str(source), [(record["paths"][i], float(s)) for i, s in zip(row_ids, row_scores) if i >= 0])
            for source, row_ids, row_scores in zip(sources, ids, scores)]


@click.group()
def group():
    """Build and query a FAISS index over an `ijepa-embed --output-dir` collection."""


@group.command("build")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--kind", type=click.Choice(["auto", "flat", "ivfpq"]), default="auto", show_default=True,
              help="auto: exact below --exact-below vectors, IVF-PQ above.")
@click.option("--exact-below", default=EXACT_BELOW, show_default=True, type=click.IntRange(min=1))
@click.option("--nlist", type=click.IntRange(min=1), help="IVF lists (default: 4 sqrt(N)).")
@click.option("--pq-m", type=click.IntRange(min=1), help="PQ sub-quantizers (must divide the embedding size).")
@click.option("--nprobe", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--debug", is_flag=True)
def build_command(folder, kind, exact_below, nlist, pq_m, nprobe, debug):
    """Build FOLDER/index.faiss from the collection in FOLDER."""
    def body():
        record = build_index(Path(folder), kind, exact_below=exact_below, nlist=nlist, pq_m=pq_m, nprobe=nprobe)
        recall = f", recall@10 vs exact {record['recall_at_10']:.3f}" if "recall_at_10" in record else ""
        click.echo(f"{record['kind']} index of {record['vectors']} vectors written to {Path(folder) / INDEX_NAME}{recall}")

    run_cli(body, debug)


@group.command("query")
@click.argument("images", nargs=-1, required=True)
@click.option("--artifacts", required=True, type=click.Path(), help="The artifact folder the collection was embedded with.")
@click.option("--index", "folder", required=True, type=click.Path(file_okay=False), help="The collection folder.")
@click.option("--precision", help="Default: the collection's.")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--debug", is_flag=True)
def query_command(images, artifacts, folder, precision, k, debug):
    """Print the k nearest images of the collection for each query image."""
    def body():
        for image, hits in query(Path(folder), artifacts, list(images), k, precision=precision):
            click.echo(f"{image}:")
            for path, score in hits:
                click.echo(f"  {score:.4f}  {path}")

    run_cli(body, debug)


main = click_entry(group)

if __name__ == "__main__":  # pragma: no cover
    main()
