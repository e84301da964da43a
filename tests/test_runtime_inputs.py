"""Inputs and outputs of the runtime as a hostile or unlucky user meets them: outputs that cannot be lost,
images that cannot hang or exhaust it, and one clear line for every mistake."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ijepa_deploy.runtime import (Embedder, EmbedderClosedError, ImageError, ManifestError, UsageError)

from .helpers import copy_folder, embed_cli, one_error_line, rewrite_manifest, skimage_data_dir

# ------------------------------------------------------------------------- outputs that cannot be lost


def test_output_names_are_exact(tiny_fp32, photos, tmp_path):
    image = str(photos["eval"] / "moon.png")
    for name in ("run.2024-01-01", "run.2024-01-02", "plain"):
        assert embed_cli(["--artifacts", str(tiny_fp32), image, "--output", str(tmp_path / name)]).returncode == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["plain.json", "plain.npy", "run.2024-01-01", "run.2024-01-01.json", "run.2024-01-02",
                     "run.2024-01-02.json"]
    assert np.load(tmp_path / "run.2024-01-01").shape == (1, 64)


def test_failed_write_keeps_previous_results(tiny_fp32, photos, tmp_path):
    out = tmp_path / "emb.npy"
    assert embed_cli(["--artifacts", str(tiny_fp32), str(photos["eval"] / "moon.png"), "--output", str(out)]).returncode == 0
    before = out.read_bytes(), (tmp_path / "emb.json").read_text()

    def small_files():  # the second run may write at most 10 KB per file: its .npy cannot fit
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))

    failed = subprocess.run([sys.executable, "-m", "ijepa_deploy.cli.embed", "--artifacts", str(tiny_fp32),
                             str(photos["eval"]), str(photos["calib"]), "--output", str(out)],
                            capture_output=True, text=True, preexec_fn=small_files)
    assert "nothing was replaced" in one_error_line(failed)
    assert (out.read_bytes(), (tmp_path / "emb.json").read_text()) == before  # the earlier results are intact
    assert json.loads(before[1])["sha256"] == hashlib.sha256(before[0]).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.json", "emb.npy"]  # no temporary left


@pytest.mark.parametrize("where", ["missing-folder", "read-only", "is-a-folder"])
def test_unwritable_output_fails_before_any_work(tiny_fp32, photos, tmp_path, where):
    if where == "missing-folder":
        target = tmp_path / "nope" / "e.npy"
    elif where == "read-only":
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
        target = tmp_path / "ro" / "e.npy"
        if os.access(tmp_path / "ro", os.W_OK):
            pytest.skip("running as a user that can write to read-only folders (root)")
    else:
        (tmp_path / "e.npy").mkdir()
        target = tmp_path / "e.npy"
    # a missing artifact folder would fail later: the output check must come first
    out = embed_cli(["--artifacts", str(tmp_path / "no-artifacts"), str(photos["eval"]), "--output", str(target)])
    assert "cannot write output" in one_error_line(out)


# ------------------------------------------------------------------------- inputs


def test_decompression_bomb_is_refused_before_decoding(tiny_fp32, tmp_path):
    bombs = tmp_path / "imgs"
    bombs.mkdir()
    Image.new("1", (13000, 13000)).save(bombs / "bomb.png")  # a small file that decodes to 169 Mpixels
    assert (bombs / "bomb.png").stat().st_size < 1_000_000
    shutil.copy(skimage_data_dir() / "coffee.png", bombs / "good.png")
    with Embedder.load(tiny_fp32) as embedder, pytest.raises(ImageError, match="over the limit"):
        embedder.embed([bombs / "bomb.png"])
    out = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "ijepa_deploy.cli.embed", "--artifacts",
                          str(tiny_fp32), str(bombs), "--skip-bad", "--output", str(tmp_path / "o.npy")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "skipped:" in out.stderr and "bomb.png" in out.stderr
    assert np.load(tmp_path / "o.npy").shape == (1, 64)
    peak_kb = int(next(l for l in out.stderr.splitlines() if "Maximum resident" in l).split()[-1])
    assert peak_kb < 1_500_000  # the bomb was never decoded (it would take > 1 GB)


@pytest.mark.timeout(60)
def test_fifo_is_refused_without_hanging(tiny_fp32, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with Embedder.load(tiny_fp32) as embedder, pytest.raises(ImageError, match="not a regular file"):
        embedder.embed([fifo])


def test_embed_after_close_says_so(tiny_fp32, photos):
    embedder = Embedder.load(tiny_fp32)
    embedder.close()
    with pytest.raises(EmbedderClosedError, match="this Embedder is closed"):
        embedder.embed([photos["eval"] / "moon.png"])
    embedder.close()  # idempotent


def test_batch_size_must_be_positive(tiny_fp32, photos):
    with Embedder.load(tiny_fp32) as embedder:
        for bad in (0, -1):
            with pytest.raises(UsageError, match="batch size must be a positive integer"):
                embedder.embed([photos["eval"] / "moon.png"], batch_size=bad)
    for bad in ("0", "-1"):
        out = embed_cli(["--artifacts", str(tiny_fp32), str(photos["eval"]), "--batch-size", bad])
        assert "--batch-size" in one_error_line(out)


def test_corrupt_image_names_the_file(tiny_fp32, tmp_path):
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes((skimage_data_dir() / "rocket.jpg").read_bytes()[:2000])
    with Embedder.load(tiny_fp32) as embedder, pytest.raises(ImageError, match=r"truncated\.jpg"):
        embedder.embed([skimage_data_dir() / "chelsea.png", bad])
    assert "truncated.jpg" in one_error_line(embed_cli(["--artifacts", str(tiny_fp32), str(bad)]))


def test_skip_bad_continues(tiny_fp32, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG garbage")
    Image.open(skimage_data_dir() / "coffee.png").save(tmp_path / "imgs" / "good.png")
    out = embed_cli(["--artifacts", str(tiny_fp32), str(tmp_path / "imgs"), "--skip-bad", "--output",
                  str(tmp_path / "o.npy")])
    assert out.returncode == 0, out.stderr
    assert "skipped: cannot read image" in out.stderr and "broken.png" in out.stderr
    assert np.load(tmp_path / "o.npy").shape == (1, 64)
    assert json.loads((tmp_path / "o.json").read_text())["skipped"][0][0].endswith("broken.png")


@pytest.mark.parametrize("args,message", [
    (["--resolution", "0x0"], "--resolution must be"),
    (["--resolution", "50x56"], "must be a multiple of the patch size 14"),
    (["--precision", "int4"], "precision 'int4' was not exported"),
    (["--backend", "tensorrt"], "has no TensorRT plan for fp32"),
    (["--output", "x.npy", "--output-dir", "d"], "--output and --output-dir are exclusive"),
])
def test_cli_input_errors_are_one_line(tiny_fp32, photos, args, message, tmp_path):
    out = embed_cli(["--artifacts", str(tiny_fp32), str(photos["eval"] / "moon.png"), *args], cwd=tmp_path)
    assert message in one_error_line(out)


def test_empty_input_and_missing_things(tiny_fp32, tmp_path):
    with Embedder.load(tiny_fp32) as embedder, pytest.raises(ImageError, match="no images given"):
        embedder.embed([])
    (tmp_path / "empty.txt").write_text("# a path list with no paths\n")
    (tmp_path / "list.txt").write_text("missing.png\n")
    (tmp_path / "sub").mkdir()
    assert "lists no images" in one_error_line(embed_cli(["--artifacts", str(tiny_fp32), str(tmp_path / "empty.txt")]))
    assert "missing.png" in one_error_line(embed_cli(["--artifacts", str(tiny_fp32), str(tmp_path / "list.txt")]))
    assert "contains no images" in one_error_line(embed_cli(["--artifacts", str(tiny_fp32), str(tmp_path / "sub")]))
    with pytest.raises(ManifestError, match="has no manifest.json"):
        Embedder.load(tmp_path)


def test_manifest_from_other_schemas(tiny_fp32, tmp_path):
    folder = copy_folder(tiny_fp32, tmp_path)
    rewrite_manifest(folder, lambda d: d.update(schema_version=99))
    with pytest.raises(ManifestError, match="schema 99, newer than this runtime's 3: upgrade ijepa-deploy"):
        Embedder.load(folder)
    rewrite_manifest(folder, lambda d: d.update(schema_version=1))
    with pytest.raises(ManifestError, match="schema 1, written by an older ijepa-export .* re-export"):
        Embedder.load(folder)


def test_precision_not_exported(tiny_cls_artifacts):
    with pytest.raises(ManifestError, match=r"precision 'int8' was not exported .*available: fp32"):
        Embedder.load(tiny_cls_artifacts, precision="int8")


def test_bytes_garbage(tiny_fp32):
    with Embedder.load(tiny_fp32) as embedder, pytest.raises(ImageError, match=r"input #1 \(5 bytes\)"):
        embedder.embed([skimage_data_dir() / "coffee.png", b"abcde"])


def test_embed_batches_yields_every_batch_read_before_a_source_fails(tiny_fp32, photos):
    images = sorted(photos["eval"].iterdir())[:7]

    def source():
        yield from images
        raise RuntimeError("the source broke")

    got = []
    with Embedder.load(tiny_fp32, backend="onnxruntime") as embedder, pytest.raises(RuntimeError, match="broke"):
        for batch in embedder.embed_batches(source(), batch_size=3):
            got.append(batch)
    assert [len(b) for b in got] == [3, 3, 1]  # all seven read images, then the error
