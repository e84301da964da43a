"""Collections on Ray Data (a local cluster): the same shards as one process, an actor killed mid-job,
every option carried to the actors, and a failed connect that leaves nothing behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from ijepa_deploy.collection import embed_collection
from ijepa_deploy.runtime import EmbedConfig, Embedder, read_embeddings

from .helpers import one_error_line, run_module

pytest.importorskip("pyarrow", reason="collections need pyarrow (the [collections] extra)")
ray = pytest.importorskip("ray", reason="Ray is not installed (the [ray] extra)")


class _DiesOnce:
    """An EmbedActor that kills its own worker process the first time it is called (once per run)."""

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


def test_ray_equals_single_process_with_every_option_and_a_killed_actor(local_ray, tiny_fp32, photos, tmp_path):
    """`resolution` and `threads` reach the actors (they were dropped before); an actor dies mid-job."""
    from ijepa_deploy.collection.ray_executor import embed_collection_on_ray

    config = EmbedConfig(backend="onnxruntime", resolution=(28, 42), threads=1, batch_size=4)
    inputs = [str(photos["eval"])]
    single = tmp_path / "single"
    embed_collection(inputs, single, tiny_fp32, config=config, shard_size=6)
    expected, expected_paths = read_embeddings(single)
    out = tmp_path / "ray"
    embed_collection_on_ray(inputs, out, tiny_fp32, config, shard_size=6, resume=False, dtype="float32",
                            address="local", actors=2, actor_cls=_DiesOnce)
    assert local_ray.exists()  # an actor really died mid-job
    got, paths, rows = read_embeddings(out, with_rows=True)
    assert paths == expected_paths and np.allclose(got, expected, atol=1e-5)
    assert rows.column("index").to_pylist() == list(range(18))
    with Embedder.load(tiny_fp32, config=config.replace(resolution=None)) as native:
        assert not np.allclose(native.embed(expected_paths[:2]), got[:2], atol=1e-3)  # 28x42 is not 56x56


def test_embed_dataset_api(local_ray, tiny_fp32, photos):
    from ijepa_deploy.ray import embed_dataset

    paths = sorted(photos["eval"].iterdir())[:6]
    items = [{"path": str(p)} for p in paths] + [{"path": str(photos["eval"] / "missing.png")}]
    rows = embed_dataset(ray.data.from_items(items), tiny_fp32, backend="onnxruntime", batch_size=4,
                         actors=1).take_all()
    by_path = {r["path"]: r for r in rows}
    with Embedder.load(tiny_fp32, backend="onnxruntime") as embedder:
        expected = embedder.embed(paths)
        stamp = f"{embedder.identity} file"
    for path, vector in zip(paths, expected):
        row = by_path[str(path)]
        assert row["status"] == "ok" and np.allclose(row["embedding"], vector, atol=1e-5) and row["identity"] == stamp
    assert by_path[str(photos["eval"] / "missing.png")]["status"] == "error"
    data = [{"bytes": p.read_bytes()} for p in paths[:2]]
    rows = embed_dataset(ray.data.from_items(data), tiny_fp32, backend="onnxruntime", actors=1).take_all()
    assert np.allclose(np.stack([r["embedding"] for r in rows]), expected[:2], atol=1e-5)


def test_ray_from_the_command_line(tiny_fp32, photos, tmp_path):
    """`ijepa-embed --ray local` starts its own local cluster and writes the same shards."""
    args = ["--artifacts", str(tiny_fp32), str(photos["eval"]), "--backend", "onnxruntime", "--shard-size", "7"]
    assert run_module("embed", *args, "--output-dir", str(tmp_path / "one")).returncode == 0
    out = run_module("embed", *args, "--output-dir", str(tmp_path / "ray"), "--ray", "local")
    assert out.returncode == 0, out.stderr[-2000:]
    (a, pa_), (b, pb) = read_embeddings(tmp_path / "one"), read_embeddings(tmp_path / "ray")
    assert pa_ == pb and np.allclose(a, b, atol=1e-5)


@pytest.mark.timeout(180)
def test_a_failed_connect_leaves_nothing_and_says_one_line(tiny_fp32, photos, tmp_path):
    out = tmp_path / "emb"
    done = run_module("embed", "--artifacts", str(tiny_fp32), str(photos["eval"]), "--output-dir", str(out),
                      "--ray", "ray://127.0.0.1:1")
    assert "cannot connect to Ray at 'ray://127.0.0.1:1'" in one_error_line(done)
    assert not out.exists()  # a plain retry is not refused
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1  # no Ray log lines around it
