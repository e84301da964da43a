"""Collections: input sources, sharded resumable output (SIGKILL at random points), Ray Data on a
local cluster with a killed actor, and FAISS search over what was embedded."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from ijepa_deploy.runtime import Embedder, read_embeddings
from ijepa_deploy.runtime.shards import CollectionError, RunRecord, ShardStore, embed_collection, prepare_folder
from ijepa_deploy.runtime.sources import TarMember, expand_sources

from .conftest import export_tiny, make_hf_checkpoint, one_error_line, run_module

pa = pytest.importorskip("pyarrow", reason="collections need pyarrow (the [collections] extra)")


def _tar(folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w") as tar:
        for i, path in enumerate(sorted(folder.iterdir())[:5]):
            tar.add(path, arcname=f"{i:06d}{path.suffix}")
            info = tarfile.TarInfo(f"{i:06d}.json")  # webdataset keeps metadata beside each image
            data = json.dumps({"key": i}).encode()
            info.size = len(data)
            import io

            tar.addfile(info, io.BytesIO(data))
    return target


@pytest.fixture(scope="module")
def sources(tmp_path_factory, photos) -> dict:
    root = tmp_path_factory.mktemp("sources")
    nested = root / "nested" / "deeper"
    nested.mkdir(parents=True)
    for i, path in enumerate(sorted(photos["eval"].iterdir())[:4]):
        (nested if i % 2 else root / "nested").joinpath(path.name).write_bytes(path.read_bytes())
    (root / "list.txt").write_text("# a path list\n" + "\n".join(os.path.relpath(p, root)  # relative to the list
                                                                for p in sorted(photos["calib"].iterdir())[:3]) + "\n")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": [str(p) for p in sorted(photos["eval"].iterdir())[4:7]]}), root / "list.parquet")
    return {"folder": root / "nested", "txt": root / "list.txt", "parquet": root / "list.parquet",
            "tar": _tar(photos["calib"], root / "shard-000.tar")}


def test_sources_are_enumerated_in_a_deterministic_order(sources, photos):
    items = expand_sources([sources["folder"], sources["txt"], sources["parquet"], sources["tar"]])
    assert len(items) == 4 + 3 + 3 + 5
    folder = [p.relative_to(sources["folder"]).as_posix() for p in items[:4]]
    assert folder == sorted(folder, key=lambda p: p.split("/")) and any("/" in p for p in folder)  # recursive
    assert [p.name for p in items[4:7]] == [p.name for p in sorted(photos["calib"].iterdir())[:3]]
    assert all(isinstance(t, TarMember) for t in items[10:]) and [t.name for t in items[10:]] == [
        f"{i:06d}.png" for i in range(5)]  # images only, archive order; the .json members are metadata
    assert items[10].read_bytes() == sorted(photos["calib"].iterdir())[0].read_bytes()
    assert expand_sources([sources["tar"]]) == expand_sources([sources["tar"]])


def test_sharded_output_equals_in_memory(tiny_artifacts, sources, tmp_path):
    inputs = [sources["folder"], sources["txt"], sources["parquet"], sources["tar"]]
    out = tmp_path / "emb"
    embed_collection(inputs, out, tiny_artifacts, shard_size=4, backend="onnxruntime", batch_size=3, quiet=True)
    got, paths = read_embeddings(out)
    with Embedder.load(tiny_artifacts, backend="onnxruntime") as embedder:
        items = expand_sources(inputs)
        expected = embedder.embed(items, batch_size=4)
    assert paths == [str(p) for p in items] and np.allclose(got, expected, atol=1e-6)
    assert sorted(p.name for p in out.iterdir()) == ["run.json"] + [f"shard-00000{k}.{s}" for k in range(4)
                                                                   for s in ("npy", "parquet")]
    table = __import__("pyarrow.parquet").parquet.read_table(out / "shard-000001.parquet").to_pandas()
    assert list(table["index"]) == [4, 5, 6, 7] and set(table["status"]) == {"ok"} and table["width"].min() > 0
    assert np.load(out / "shard-000001.npy").shape == (4, 64)
    run = json.loads((out / "run.json").read_text())
    assert run["total"] == 15 and run["precision"] == "fp32" and len(run["artifact_sha256"]) == 64


def test_bad_images_are_recorded_not_fatal(tiny_artifacts, photos, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in sorted(photos["eval"].iterdir())[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "zz_broken.png").write_bytes(b"\x89PNG nope")
    out = run_module("ijepa_deploy.runtime", "--artifacts", str(tiny_artifacts), str(folder), "--output-dir",
                     str(tmp_path / "emb"), "--shard-size", "2", "--dtype", "float16")
    assert out.returncode == 0, out.stderr
    embeddings, paths, rows = read_embeddings(tmp_path / "emb", with_rows=True)
    assert embeddings.shape == (3, 64) and embeddings.dtype == np.float32 and len(paths) == 3
    assert np.load(tmp_path / "emb" / "shard-000000.npy").dtype == np.float16
    statuses = rows.to_pydict()
    assert statuses["status"] == ["ok", "ok", "ok", "error"] and "cannot read image" in statuses["error"][3]


def test_resume_rules(tiny_artifacts, photos, tmp_path):
    out = tmp_path / "emb"
    args = ["--artifacts", str(tiny_artifacts), str(photos["eval"]), "--output-dir", str(out), "--shard-size", "5"]
    assert run_module("ijepa_deploy.runtime", *args).returncode == 0
    assert "pass --resume to continue it" in one_error_line(run_module("ijepa_deploy.runtime", *args))
    assert run_module("ijepa_deploy.runtime", *args, "--resume").returncode == 0  # nothing left to do
    other = ["--artifacts", str(tiny_artifacts), str(photos["calib"]), "--output-dir", str(out), "--resume"]
    assert "written by a different job" in one_error_line(run_module("ijepa_deploy.runtime", *other))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("someone's file")
    args[4] = str(tmp_path / "full")
    assert "not empty" in one_error_line(run_module("ijepa_deploy.runtime", *args))


@pytest.fixture(scope="module")
def slower_artifacts(tmp_path_factory) -> Path:
    ckpt = make_hf_checkpoint(tmp_path_factory.mktemp("slow") / "ijepa_slow", hidden=192, layers=6, heads=3, mlp=768,
                              image=112, patch=16)
    return export_tiny(ckpt, tmp_path_factory.mktemp("engines"), max_batch=8)


def test_sigkill_at_random_points_then_resume_gives_every_input_once(slower_artifacts, photos, tmp_path):
    listing = tmp_path / "many.txt"
    files = sorted(photos["eval"].iterdir()) + sorted(photos["calib"].iterdir())
    listing.write_text("\n".join(str(files[i % len(files)]) for i in range(300)) + "\n")
    reference_dir = tmp_path / "reference"
    embed_collection([listing], reference_dir, slower_artifacts, shard_size=7, backend="onnxruntime", quiet=True)
    expected, expected_paths = read_embeddings(reference_dir)
    rng = random.Random(0)
    cmd = [sys.executable, "-m", "ijepa_deploy.runtime", "--artifacts", str(slower_artifacts), str(listing),
           "--backend", "onnxruntime", "--shard-size", "7"]
    for run in range(5):
        out = tmp_path / f"run{run}"
        for attempt in range(3):  # killed up to three times, at random moments
            proc = subprocess.Popen(cmd + ["--output-dir", str(out)] + (["--resume"] if out.exists() else []),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            started = time.time()
            while not (out / "run.json").exists() and proc.poll() is None and time.time() - started < 60:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        done = subprocess.run(cmd + ["--output-dir", str(out), "--resume"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        got, paths, rows = read_embeddings(out, with_rows=True)
        assert paths == expected_paths and np.allclose(got, expected, atol=1e-6)
        indices = rows.column("index").to_pylist()
        assert indices == list(range(300))  # every input exactly once, in order
        assert not list(out.glob(".*"))  # no temporary file left


def test_incomplete_collection_is_refused(tiny_artifacts, photos, tmp_path):
    out = tmp_path / "emb"
    embed_collection([photos["eval"]], out, tiny_artifacts, shard_size=5, quiet=True)
    (out / "shard-000002.parquet").unlink()
    with pytest.raises(CollectionError, match="shard 2 is missing or incomplete"):
        read_embeddings(out)
    data = bytearray((out / "shard-000001.npy").read_bytes())
    data[-1] ^= 0xFF
    (out / "shard-000001.npy").write_bytes(bytes(data))
    embed_collection([photos["eval"]], out, tiny_artifacts, shard_size=5, resume=True, quiet=True)
    with pytest.raises(Exception, match="does not match the sha256"):
        read_embeddings(out)


# ------------------------------------------------------------------------- Ray


ray = pytest.importorskip("ray", reason="Ray is not installed (the [ray] extra)")


class _DiesOnce:
    """An EmbedActor that kills its own worker process the first time it is called (once per run)."""

    marker: str = ""

    def __init__(self, *args, **kwargs):
        from ijepa_deploy.ray import EmbedActor

        self.inner = EmbedActor(*args, **kwargs)

    def __call__(self, batch):
        marker = Path(os.environ["IJEPA_TEST_DIE_MARKER"])
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return self.inner(batch)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    marker = tmp_path_factory.mktemp("ray") / "died"
    os.environ["IJEPA_TEST_DIE_MARKER"] = str(marker)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"IJEPA_TEST_DIE_MARKER": str(marker)}})
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield marker
    ray.shutdown()


def test_ray_equals_single_process_and_survives_a_killed_actor(local_ray, tiny_artifacts, photos, sources, tmp_path):
    from ijepa_deploy.ray import embed_collection_on_ray

    inputs = [str(photos["eval"]), str(sources["tar"])]
    single = tmp_path / "single"
    embed_collection(inputs, single, tiny_artifacts, shard_size=6, backend="onnxruntime", quiet=True)
    expected, expected_paths = read_embeddings(single)

    from ijepa_deploy.runtime.sources import iter_sources
    from ijepa_deploy.runtime.manifest import Manifest
    from dataclasses import asdict

    manifest = Manifest.load(tiny_artifacts)
    total = sum(1 for _ in iter_sources(inputs))
    record = RunRecord(name=manifest.name, artifacts=str(tiny_artifacts),
                       artifact_sha256=manifest.artifact("fp32").files[0].sha256, precision="fp32",
                       backend="onnxruntime", preprocessing=asdict(manifest.preprocessing), inputs=inputs, total=total,
                       shard_size=6, dtype="float32", dim=64)
    out = tmp_path / "ray"
    store = prepare_folder(out, record, resume=False)
    embed_collection_on_ray(store, record, "local", batch_size=4, quiet=True, actors=2, actor_cls=_DiesOnce)
    assert local_ray.exists()  # an actor really died mid-job
    got, paths, rows = read_embeddings(out, with_rows=True)
    assert paths == expected_paths and np.allclose(got, expected, atol=1e-5)
    assert rows.column("index").to_pylist() == list(range(total))


def test_ray_from_the_command_line(tiny_artifacts, photos, tmp_path):
    """`ijepa-embed --ray local` starts its own local cluster and writes the same shards."""
    args = ["--artifacts", str(tiny_artifacts), str(photos["eval"]), "--backend", "onnxruntime", "--shard-size", "7"]
    assert run_module("ijepa_deploy.runtime", *args, "--output-dir", str(tmp_path / "one")).returncode == 0
    out = run_module("ijepa_deploy.runtime", *args, "--output-dir", str(tmp_path / "ray"), "--ray", "local")
    assert out.returncode == 0, out.stderr[-2000:]
    (a, pa_), (b, pb) = read_embeddings(tmp_path / "one"), read_embeddings(tmp_path / "ray")
    assert pa_ == pb and np.allclose(a, b, atol=1e-5)


def test_embed_dataset_api(local_ray, tiny_artifacts, photos):
    from ijepa_deploy.ray import embed_dataset

    paths = sorted(photos["eval"].iterdir())[:6]
    ds = ray.data.from_items([{"path": str(p)} for p in paths] + [{"path": str(photos["eval"] / "missing.png")}])
    rows = embed_dataset(ds, tiny_artifacts, backend="onnxruntime", batch_size=4, actors=1).take_all()
    by_path = {r["path"]: r for r in rows}
    with Embedder.load(tiny_artifacts, backend="onnxruntime") as embedder:
        expected = embedder.embed(paths)
    for path, vector in zip(paths, expected):
        assert by_path[str(path)]["status"] == "ok" and np.allclose(by_path[str(path)]["embedding"], vector, atol=1e-5)
    assert by_path[str(photos["eval"] / "missing.png")]["status"] == "error"
    data = [{"bytes": p.read_bytes()} for p in paths[:2]]
    rows = embed_dataset(ray.data.from_items(data), tiny_artifacts, backend="onnxruntime", actors=1).take_all()
    assert np.allclose(np.stack([r["embedding"] for r in rows]), expected[:2], atol=1e-5)


# ------------------------------------------------------------------------- FAISS


faiss = pytest.importorskip("faiss", reason="FAISS is not installed (the [index] extra)")


def test_index_build_and_query(tiny_artifacts, photos, tmp_path):
    out = tmp_path / "emb"
    embed_collection([photos["eval"]], out, tiny_artifacts, shard_size=5, quiet=True)
    built = run_module("ijepa_deploy.runtime.search", "build", str(out))
    assert built.returncode == 0 and "flat index of 18 vectors" in built.stdout, built.stderr
    query = sorted(photos["eval"].iterdir())[3]
    found = run_module("ijepa_deploy.runtime.search", "query", "--artifacts", str(tiny_artifacts), "--index",
                       str(out), str(query), "-k", "3")
    assert found.returncode == 0, found.stderr
    hits = found.stdout.splitlines()[1:]
    assert len(hits) == 3 and hits[0].strip().endswith(query.name) and float(hits[0].split()[0]) > 0.9999
    other = tmp_path / "other"
    export_tiny(make_hf_checkpoint(tmp_path / "ijepa_other", seed=5), other, max_batch=2)
    refused = run_module("ijepa_deploy.runtime.search", "query", "--artifacts", str(other / "other"), "--index",
                         str(out), str(query))
    assert "is not the artifact" in one_error_line(refused)


def test_ivfpq_recall_against_exact(tmp_path):
    """A generated collection of 30,000 clustered 64-d vectors: IVF-PQ's recall@10 is measured and recorded."""
    from ijepa_deploy.runtime.search import build_index
    from ijepa_deploy.runtime.shards import Row

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((200, 64)).astype(np.float32)
    n, shard = 30_000, 10_000
    record = RunRecord(name="gen", artifacts="gen", artifact_sha256="0" * 64, precision="fp32", backend="none",
                       preprocessing={}, inputs=["generated"], total=n, shard_size=shard, dtype="float32", dim=64)
    store = prepare_folder(tmp_path / "gen", record, resume=False)
    for k in range(3):
        values = centers[rng.integers(0, 200, shard)] + 0.3 * rng.standard_normal((shard, 64)).astype(np.float32)
        store.write(k, values, [Row(k * shard + i, f"v{k * shard + i}", 1, 1, "ok", None) for i in range(shard)])
    result = build_index(tmp_path / "gen", "ivfpq")
    assert result["kind"] == "ivfpq" and result["vectors"] == n and result["pq_m"] == 16
    print(f"IVF-PQ recall@10 vs exact: {result['recall_at_10']:.3f} ({result})")
    assert 0.3 < result["recall_at_10"] <= 1.0  # chance is 10 / 30000; tight clusters are hard for any PQ
    exact = build_index(tmp_path / "gen", "flat")
    assert "recall_at_10" not in exact
