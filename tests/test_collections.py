"""Collections: sharded resumable output that equals in-memory embedding, job records that describe the
job (resume compares every option that changes the vectors and the resolved inputs, row by row), shards
that verify themselves, SIGKILL at random points, and outputs a shared collection's readers can read."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ijepa_deploy.collection import embed_collection
from ijepa_deploy.contract.errors import CollectionError
from ijepa_deploy.runtime import EmbedConfig, Embedder, read_embeddings
from ijepa_deploy.runtime.sources import expand_sources

from .helpers import export_tiny, make_hf_checkpoint, one_error_line, run_module

pa = pytest.importorskip("pyarrow", reason="collections need pyarrow (the [collections] extra)")
import pyarrow.parquet as pq  # noqa: E402


def _photos(folder: Path, photos: dict, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(photos["eval"].iterdir())[:n]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_sharded_output_equals_in_memory(tiny_fp32, photos, tmp_path):
    inputs = [photos["eval"], sorted(photos["calib"].iterdir())[0]]
    out = tmp_path / "emb"
    embed_collection(inputs, out, tiny_fp32, shard_size=4, backend="onnxruntime", batch_size=3)
    got, paths = read_embeddings(out)
    with Embedder.load(tiny_fp32, backend="onnxruntime") as embedder:
        items = expand_sources(inputs)
        expected = embedder.embed(items, batch_size=4)
    assert paths == [str(p) for p in items] and np.allclose(got, expected, atol=1e-6)
    assert sorted(p.name for p in out.iterdir()) == ["inputs.parquet", "run.json"] + [
        f"shard-00000{k}.{s}" for k in range(5) for s in ("json", "npy", "parquet")]
    table = pq.read_table(out / "shard-000001.parquet").to_pandas()
    assert list(table["index"]) == [4, 5, 6, 7] and set(table["status"]) == {"ok"} and table["width"].min() > 0
    run = json.loads((out / "run.json").read_text())
    assert run["total"] == 19 and run["precision"] == "fp32" and run["identity"].startswith("sha256:")
    assert run["identity"] == Embedder.load(tiny_fp32, backend="onnxruntime").identity
    assert run["resolution"] == [56, 56] and run["compute_precision"] == "file"
    assert run["inputs"]["path"] == "inputs.parquet"  # the file the record describes, not its temporary name


def test_bad_images_are_recorded_not_fatal(tiny_fp32, photos, tmp_path):
    folder = _photos(tmp_path / "imgs", photos, 3)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG nope")
    out = run_module("embed", "--artifacts", str(tiny_fp32), str(folder), "--output-dir", str(tmp_path / "emb"),
                     "--shard-size", "2", "--dtype", "float16")
    assert out.returncode == 0, out.stderr
    embeddings, paths, rows = read_embeddings(tmp_path / "emb", with_rows=True)
    assert embeddings.shape == (3, 64) and embeddings.dtype == np.float32 and len(paths) == 3
    assert np.load(tmp_path / "emb" / "shard-000000.npy").dtype == np.float16
    statuses = rows.to_pydict()
    assert statuses["status"] == ["ok", "ok", "ok", "error"] and "cannot read image" in statuses["error"][3]


def test_resume_rules(tiny_fp32, photos, tmp_path):
    out = tmp_path / "emb"
    args = ["--artifacts", str(tiny_fp32), str(photos["eval"]), "--output-dir", str(out), "--shard-size", "5"]
    assert run_module("embed", *args).returncode == 0
    assert "pass --resume to continue it" in one_error_line(run_module("embed", *args))
    assert run_module("embed", *args, "--resume").returncode == 0  # nothing left to do
    other = ["--artifacts", str(tiny_fp32), str(photos["calib"]), "--output-dir", str(out), "--shard-size", "5",
             "--resume"]
    assert "written for other inputs: input 0 (given)" in one_error_line(run_module("embed", *other))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("someone's file")
    args[4] = str(tmp_path / "full")
    assert "not empty" in one_error_line(run_module("embed", *args))


@pytest.mark.parametrize("change,named", [
    ({"resolution": (28, 28)}, "resolution is [28, 28] now, [56, 56] in the collection"),
    ({"dtype": "float16"}, "dtype is float16 now, float32 in the collection"),
    ({"shard_size": 4}, "shard_size is 4 now, 5 in the collection"),
])
def test_resume_refuses_options_that_change_the_vectors(tiny_fp32, photos, tmp_path, change, named):
    folder = _photos(tmp_path / "imgs", photos, 6)
    out = tmp_path / "emb"
    embed_collection([folder], out, tiny_fp32, shard_size=5)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    options = {"shard_size": 5, "dtype": "float32", **{k: v for k, v in change.items() if k != "resolution"}}
    config = EmbedConfig(resolution=change.get("resolution"))
    with pytest.raises(CollectionError, match=named.replace("[", r"\[").replace("]", r"\]")):
        embed_collection([folder], out, tiny_fp32, config=config, resume=True, **options)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing was written


def test_resume_refuses_reordered_replaced_or_moved_inputs(tiny_fp32, photos, tmp_path):
    folder = _photos(tmp_path / "imgs", photos, 6)
    names = sorted(p.name for p in folder.iterdir())
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(f"imgs/{n}" for n in names) + "\n")
    out = tmp_path / "emb"
    embed_collection([listing], out, tiny_fp32, shard_size=4)
    listing.write_text("\n".join(f"imgs/{n}" for n in [names[1], names[0], *names[2:]]) + "\n")  # same count
    with pytest.raises(CollectionError, match=rf"input 0 \(path\) is .*{names[1]}.* now, .*{names[0]}"):
        embed_collection([listing], out, tiny_fp32, shard_size=4, resume=True)
    listing.write_text("\n".join(f"imgs/{n}" for n in names) + "\n")
    replaced = folder / names[3]
    replaced.write_bytes(sorted(photos["eval"].iterdir())[10].read_bytes())  # another photo, same name
    with pytest.raises(CollectionError, match=r"input 3 \((size|mtime_ns)\)"):
        embed_collection([listing], out, tiny_fp32, shard_size=4, resume=True)
    # a relative argument resumed from another working directory names other files
    rel = ["--artifacts", str(tiny_fp32), "imgs", "--output-dir", str(tmp_path / "rel"), "--shard-size", "4"]
    assert run_module("embed", *rel, cwd=tmp_path).returncode == 0
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(folder, tmp_path / "elsewhere" / "imgs")
    refused = run_module("embed", *rel, "--resume", cwd=tmp_path / "elsewhere")
    assert "input 0 (path)" in one_error_line(refused) and "elsewhere" in refused.stderr


def test_a_photo_added_during_the_run_stays_out_of_the_job(tiny_fp32, photos, tmp_path):
    """Inputs are resolved once: a photo that appears while the job runs is not half in it."""
    folder = _photos(tmp_path / "imgs", photos, 6)
    late = sorted(photos["eval"].iterdir())[12]

    def add_one(done, total):
        if not (folder / "zz_late.png").exists():
            (folder / "zz_late.png").write_bytes(late.read_bytes())

    out = tmp_path / "emb"
    embed_collection([folder], out, tiny_fp32, shard_size=4, batch_size=2, progress=add_one)
    embeddings, paths = read_embeddings(out)
    assert len(paths) == 6 and not any("zz_late" in p for p in paths) and embeddings.shape == (6, 64)
    with pytest.raises(CollectionError, match="the inputs hold 7 images now, 6 in the collection"):
        embed_collection([folder], out, tiny_fp32, shard_size=4, resume=True)


def test_edited_collection_metadata_is_refused(tiny_fp32, photos, tmp_path):
    out = tmp_path / "emb"
    embed_collection([_photos(tmp_path / "imgs", photos, 8)], out, tiny_fp32, shard_size=4)
    clean = tmp_path / "clean"
    shutil.copytree(out, clean)
    table = pq.read_table(out / "shard-000000.parquet")  # two paths swapped, the commit record made to agree
    paths = table.column("path").to_pylist()
    paths[0], paths[1] = paths[1], paths[0]
    pq.write_table(table.set_column(1, "path", pa.array(paths)), out / "shard-000000.parquet")
    with pytest.raises(CollectionError, match=r"shard-000000\.parquet does not match the sha256"):
        read_embeddings(out)
    commit = json.loads((out / "shard-000000.json").read_text())
    from ijepa_deploy.contract.integrity import sha256_file

    commit["parquet"].update(sha256=sha256_file(out / "shard-000000.parquet"),
                             bytes=(out / "shard-000000.parquet").stat().st_size)
    (out / "shard-000000.json").write_text(json.dumps(commit))
    with pytest.raises(CollectionError, match="row 0 names another input than the input list"):
        read_embeddings(out)
    shutil.rmtree(out)
    shutil.copytree(clean, out)
    run = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**run, "total": 4}))  # rows silently missing, before
    with pytest.raises(CollectionError, match="beyond the 1 shard"):
        read_embeddings(out)
    (out / "shard-000001.json").unlink()
    with pytest.raises(CollectionError, match="lists 8 inputs, run.json says 4"):
        read_embeddings(out)


def test_incomplete_collection_is_refused(tiny_fp32, photos, tmp_path):
    out = tmp_path / "emb"
    embed_collection([photos["eval"]], out, tiny_fp32, shard_size=5)
    (out / "shard-000002.json").unlink()
    with pytest.raises(CollectionError, match="shard 2 is missing or incomplete"):
        read_embeddings(out)
    data = bytearray((out / "shard-000001.npy").read_bytes())
    data[-1] ^= 0xFF
    (out / "shard-000001.npy").write_bytes(bytes(data))
    embed_collection([photos["eval"]], out, tiny_fp32, shard_size=5, resume=True)  # rewrites shard 2 only
    with pytest.raises(CollectionError, match=r"shard-000001\.npy does not match the sha256"):
        read_embeddings(out)


def test_outputs_honour_the_umask(tiny_fp32, photos, tmp_path):
    """A shared collection must be readable by its readers: files get the umask's normal mode."""
    folder = _photos(tmp_path / "imgs", photos, 2)
    for umask, mode in ((0o022, 0o644), (0o002, 0o664)):
        out = tmp_path / f"emb{umask:o}"
        code = (f"import os; os.umask({umask}); from ijepa_deploy.cli.embed import main; "
                f"main(['--artifacts', {str(tiny_fp32)!r}, {str(folder)!r}, '--output-dir', {str(out)!r}])")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {p.name: mode for p in out.iterdir()}


@pytest.fixture(scope="module")
def slower_fp32(tmp_path_factory) -> Path:
    ckpt = make_hf_checkpoint(tmp_path_factory.mktemp("slow") / "ijepa_slow", hidden=192, layers=6, heads=3, mlp=768,
                              image=112, patch=16)
    return export_tiny(ckpt, tmp_path_factory.mktemp("engines"), max_batch=8)


def test_sigkill_at_random_points_then_resume_gives_every_input_once(slower_fp32, photos, tmp_path):
    listing = tmp_path / "many.txt"
    files = sorted(photos["eval"].iterdir()) + sorted(photos["calib"].iterdir())
    listing.write_text("\n".join(str(files[i % len(files)]) for i in range(300)) + "\n")
    reference_dir = tmp_path / "reference"
    embed_collection([listing], reference_dir, slower_fp32, shard_size=7, backend="onnxruntime")
    expected, expected_paths = read_embeddings(reference_dir)
    rng = random.Random(0)
    cmd = [sys.executable, "-m", "ijepa_deploy.cli.embed", "--artifacts", str(slower_fp32), str(listing),
           "--backend", "onnxruntime", "--shard-size", "7"]
    for run in range(5):
        out = tmp_path / f"run{run}"
        for attempt in range(3):  # killed up to three times, at random moments
            proc = subprocess.Popen(cmd + ["--output-dir", str(out)] + (["--resume"] if (out / "run.json").exists()
                                                                        else []),
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
        assert rows.column("index").to_pylist() == list(range(300))  # every input exactly once, in order
        assert not list(out.glob(".*"))  # no temporary file left


def test_every_option_reaches_the_backend_on_every_path(tiny_fp32, photos, tmp_path):
    """--streams with --output-dir was ignored before: the backend the job ran is recorded, and shows it."""
    from ijepa_deploy.runtime.backends.openvino_backend import openvino_unavailable_reason

    if openvino_unavailable_reason():
        pytest.skip(f"OpenVINO: {openvino_unavailable_reason()}")
    out = tmp_path / "emb"
    done = run_module("embed", "--artifacts", str(tiny_fp32), str(_photos(tmp_path / "imgs", photos, 4)),
                      "--output-dir", str(out), "--backend", "openvino", "--streams", "1", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert "1 streams" in json.loads((out / "run.json").read_text())["backend"]
