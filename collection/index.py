"""FAISS search over a collection (`pip install 'ijepa-deploy[index]'`).

    build_index("emb/")                                  # exact inner product below 100,000 vectors, else IVF-PQ
    query("emb/", "engines/vith14_1k", ["cat.jpg"], k=10)

The index is built shard by shard from a verified collection (IVF-PQ is trained on a sample first)
and written atomically beside the shards with `index.json`: how it was made, its measured recall,
the artifact identity of the vectors, the digest of the collection it was built from, and the
sha256 of `index.faiss`. A query refuses an artifact with another identity (its vectors are not
comparable), an index the collection no longer matches, and a damaged index file, each in one line.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.atomic import atomic_file, write_atomic
from ijepa_deploy.contract.errors import CollectionError, UsageError
from ijepa_deploy.contract.identity import short
from ijepa_deploy.contract.integrity import sha256_file
from ijepa_deploy.contract.naming import INDEX_NAME, INDEX_RECORD_NAME
from ijepa_deploy.contract.shard_reader import collection_digest, embedded_paths, iter_shards, job_of
from ijepa_deploy.runtime.config import EmbedConfig
from ijepa_deploy.runtime.embedder import Embedder
from ijepa_deploy.runtime.sources import expand_sources

EXACT_BELOW = 100_000
SAMPLE = 100_000  # vectors kept in memory to train IVF-PQ and measure recall (at least this many, whole shards)
INDEX_FORMAT = 2


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UsageError("ijepa-index needs FAISS: pip install 'ijepa-deploy[index]'") from None
    return faiss


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pick_pq(dim: int) -> int:
    """The largest sub-quantizer count <= dim / 4 that divides dim (8-bit codes of >= 4 dimensions:
    1280-d float32 embeddings shrink 16x)."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def _new_index(kind: str, dim: int, count: int, sample: np.ndarray, nlist: int | None, pq_m: int | None,
               nprobe: int):
    faiss = _faiss()
    if kind == "flat":
        return faiss.IndexFlatIP(dim), {}
    if kind != "ivfpq":
        raise UsageError(f"--kind must be auto, flat or ivfpq, got {kind!r}")
    nlist = nlist or max(1, min(int(4 * math.sqrt(count)), count // 39))
    pq_m = pq_m or pick_pq(dim)
    if dim % pq_m:
        raise UsageError(f"--pq-m {pq_m} must divide the embedding size {dim}")
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    if len(sample) < max(nlist * 39, 256):
        raise UsageError(f"IVF-PQ with {nlist} lists needs at least {max(nlist * 39, 256)} training vectors, "
                         f"the collection has {len(sample)}; use --kind flat or a smaller --nlist")
    index.train(sample)
    index.nprobe = min(nprobe, nlist)
    return index, {"nlist": nlist, "pq_m": pq_m, "bits": 8, "nprobe": index.nprobe}


def build_index(folder: str | Path, kind: str = "auto", *, exact_below: int = EXACT_BELOW, nlist: int | None = None,
                pq_m: int | None = None, nprobe: int = 32, recall_queries: int = 200, seed: int = 0) -> dict:
    """Build `folder/index.faiss` from the verified collection; returns its record (recall@10 vs exact)."""
    folder = Path(folder)
    job = job_of(folder)
    count, parts = 0, []
    for values, _, _ in iter_shards(folder):
        count += len(values)
        if sum(len(s) for s in parts) < SAMPLE:
            parts.append(normalise(values))
    if count == 0:
        raise CollectionError(f"{folder} holds no embeddings")
    sample = np.concatenate(parts)  # the first vectors of the collection: ids 0 .. len(sample) - 1
    del parts
    kind = ("flat" if count < exact_below else "ivfpq") if kind == "auto" else kind
    index, params = _new_index(kind, job.dim, count, sample, nlist, pq_m, nprobe)
    if len(sample) == count:  # the sample is the whole collection
        index.add(sample)
    else:
        for values, _, _ in iter_shards(folder, verify=False):  # verified above; the digest below pins it
            if len(values):
                index.add(normalise(values))
    record = {"format": INDEX_FORMAT, "kind": kind, "vectors": count, "dim": job.dim,
              "metric": "inner product on L2-normalised embeddings", "identity": job.identity,
              "precision": job.precision, "collection": collection_digest(folder), **params}
    if kind != "flat":
        record["recall_at_10"] = _recall(index, sample, recall_queries, seed)
    _save(folder, index, record)
    return record


def _recall(index, data: np.ndarray, queries: int, seed: int) -> float:
    """recall@10 of `index` against exact search, on database vectors (the sample) used as queries."""
    faiss = _faiss()
    exact = faiss.IndexFlatIP(data.shape[1])
    exact.add(data)
    rng = np.random.default_rng(seed)
    q = data[rng.choice(len(data), size=min(queries, len(data)), replace=False)]
    k = min(10, len(data))
    _, truth = exact.search(q, k)
    _, got = index.search(q, k)
    # the sample is the first vectors of the collection, so its ids are the index's ids
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, got)]))


def _save(folder: Path, index, record: dict) -> None:
    """index.faiss written atomically and hashed as it is written (streamed: no second copy in memory),
    then index.json."""
    faiss = _faiss()
    digest, size = hashlib.sha256(), 0
    with atomic_file(folder / INDEX_NAME) as fh:
        def write(chunk: bytes) -> int:
            nonlocal size
            digest.update(chunk)
            size += len(chunk)
            return fh.write(chunk)

        faiss.write_index(index, faiss.PyCallbackIOWriter(write))
    record = {**record, "index_sha256": digest.hexdigest(), "index_bytes": size}
    write_atomic(folder / INDEX_RECORD_NAME, json.dumps(record, indent=2) + "\n")


def load_index(folder: str | Path):
    """(faiss index, its record), after checking the record, the file and the collection it indexes."""
    faiss, folder = _faiss(), Path(folder)
    record_path, index_path = folder / INDEX_RECORD_NAME, folder / INDEX_NAME
    if not record_path.is_file() or not index_path.is_file():
        raise CollectionError(f"{folder} has no index; build it with `ijepa-index build {folder}`")
    try:
        record = json.loads(record_path.read_text())
        for key in ("identity", "collection", "index_sha256", "vectors", "dim"):
            record[key]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CollectionError(f"{record_path} is not an index record ({str(exc)[:120]}); rebuild with "
                              f"`ijepa-index build {folder}`") from None
    if sha256_file(index_path) != record["index_sha256"]:
        raise CollectionError(f"{index_path} is not the index {record_path.name} describes (sha256 differs): it was "
                              f"replaced or damaged; rebuild with `ijepa-index build {folder}`")
    if collection_digest(folder) != record["collection"]:
        raise CollectionError(f"{folder}'s collection changed since its index was built; rebuild with "
                              f"`ijepa-index build {folder}`")
    try:
        index = faiss.read_index(str(index_path))
    except Exception as exc:  # FAISS raises RuntimeError with C++ traces
        raise CollectionError(f"{index_path} cannot be read by FAISS ({str(exc).splitlines()[0][:120]}); rebuild "
                              "it") from None
    if index.ntotal != record["vectors"] or index.d != record["dim"]:
        raise CollectionError(f"{index_path} holds {index.ntotal} vectors of {index.d} dimensions, its record says "
                              f"{record['vectors']} of {record['dim']}; rebuild it")
    if hasattr(index, "nprobe") and "nprobe" in record:
        index.nprobe = record["nprobe"]
    return index, record


def query(folder: str | Path, artifacts: str | Path, images: list, k: int = 10, *,
          config: EmbedConfig | None = None, **options) -> list[tuple[str, list[tuple[str, float]]]]:
    """(query image, its k nearest collection images with cosine scores) for each query image."""
    folder = Path(folder)
    index, record = load_index(folder)
    config = config or EmbedConfig(**{"precision": record.get("precision", "fp32"), **options})
    with Embedder.load(artifacts, config=config) as embedder:
        if embedder.identity != record["identity"]:
            raise CollectionError(f"{artifacts} ({embedder.precision}, identity {short(embedder.identity)}) is not "
                                  f"the artifact {folder} was embedded with (identity {short(record['identity'])}): "
                                  "its vectors would not be comparable")
        sources = expand_sources(images)
        vectors = normalise(embedder.embed(sources))
    paths = embedded_paths(folder)
    scores, ids = index.search(vectors, min(k, record["vectors"]))
    return [(str(source), [(paths[i], float(s)) for i, s in zip(row_ids, row_scores) if i >= 0])
            for source, row_ids, row_scores in zip(sources, ids, scores)]
