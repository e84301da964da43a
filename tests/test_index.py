"""FAISS search over a collection: exact and IVF-PQ (recall measured), and every way an index could answer
for another collection or from a damaged file, refused in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ijepa_deploy.collection import build_index, embed_collection

from .helpers import one_error_line, run_module, synthetic_collection

pytest.importorskip("pyarrow", reason="collections need pyarrow (the [collections] extra)")
faiss = pytest.importorskip("faiss", reason="FAISS is not installed (the [index] extra)")


@pytest.fixture()
def collection(tiny_fp32, photos, tmp_path):
    out = tmp_path / "emb"
    embed_collection([photos["eval"]], out, tiny_fp32, shard_size=5)
    return out


def test_index_build_and_query(tiny_fp32, collection, photos):
    built = run_module("index", "build", str(collection))
    assert built.returncode == 0 and "flat index of 18 vectors" in built.stdout, built.stderr
    query = sorted(photos["eval"].iterdir())[3]
    found = run_module("index", "query", "--artifacts", str(tiny_fp32), "--index", str(collection), str(query),
                       "-k", "3")
    assert found.returncode == 0, found.stderr
    hits = found.stdout.splitlines()[1:]
    assert len(hits) == 3 and hits[0].strip().endswith(query.name) and float(hits[0].split()[0]) > 0.9999
    record = json.loads((collection / "index.json").read_text())
    assert record["identity"].startswith("sha256:") and record["collection"].startswith("sha256:")


def test_an_index_of_another_collection_is_refused(tiny_fp32, collection, photos, tmp_path):
    other = tmp_path / "other"
    embed_collection([photos["calib"]], other, tiny_fp32, shard_size=5)
    build_index(other)
    build_index(collection)
    shutil.copy(other / "index.faiss", collection / "index.faiss")  # a valid index, of other vectors
    query = ["--artifacts", str(tiny_fp32), "--index", str(collection), str(sorted(photos["eval"].iterdir())[0])]
    assert "is not the index index.json describes" in one_error_line(run_module("index", "query", *query))
    shutil.copy(other / "index.json", collection / "index.json")  # and its record too
    assert "collection changed since its index was built" in one_error_line(run_module("index", "query", *query))


@pytest.mark.parametrize("damage", ["garbage-index", "truncated-record", "collection-changed"])
def test_damaged_indexes_are_one_line(tiny_fp32, collection, photos, damage):
    build_index(collection)
    if damage == "garbage-index":
        (collection / "index.faiss").write_bytes(b"not an index at all")
        record = json.loads((collection / "index.json").read_text())
        from ijepa_deploy.contract.integrity import sha256_file

        record["index_sha256"] = sha256_file(collection / "index.faiss")  # made to agree: FAISS must refuse it
        (collection / "index.json").write_text(json.dumps(record))
        expected = "cannot be read by FAISS"
    elif damage == "truncated-record":
        text = (collection / "index.json").read_text()
        (collection / "index.json").write_text(text[: len(text) // 2])
        expected = "is not an index record"
    else:
        (collection / "shard-000001.json").unlink()
        expected = "shard 1 is missing"
    query = ["--artifacts", str(tiny_fp32), "--index", str(collection), str(sorted(photos["eval"].iterdir())[0])]
    assert expected in one_error_line(run_module("index", "query", *query))


def test_ivfpq_recall_against_exact(tmp_path):
    """A generated collection of 30,000 clustered 64-d vectors: IVF-PQ's recall@10 is measured and recorded."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((200, 64)).astype(np.float32)
    vectors = centers[rng.integers(0, 200, 30_000)] + 0.3 * rng.standard_normal((30_000, 64)).astype(np.float32)
    folder = synthetic_collection(tmp_path / "gen", vectors, 10_000)
    result = build_index(folder, "ivfpq")
    assert result["kind"] == "ivfpq" and result["vectors"] == 30_000 and result["pq_m"] == 16
    print(f"IVF-PQ recall@10 vs exact: {result['recall_at_10']:.3f} ({result})")
    assert 0.3 < result["recall_at_10"] <= 1.0  # chance is 10 / 30000; tight clusters are hard for any PQ
    exact = build_index(folder, "flat")
    assert "recall_at_10" not in exact
