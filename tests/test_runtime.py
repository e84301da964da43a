"""The torch-free runtime against transformers (ViTImageProcessor + IJepaModel) on real photos."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ijepa_deploy.runtime import Embedder, ImageError, Manifest, ManifestError, Preprocessor

from .conftest import skimage_data_dir

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "logo.png"]
MODES = ["RGB", "L", "LA", "P", "PA", "RGBA", "CMYK", "I;16", "I", "F", "1"]


def hf_processor(manifest: Manifest, size=None):
    from transformers import ViTImageProcessorPil

    pre = manifest.preprocessing
    h, w = size or (pre["height"], pre["width"])
    return ViTImageProcessorPil(size={"height": h, "width": w}, resample=2, do_rescale=True,
                                rescale_factor=pre["rescale_factor"], image_mean=pre["mean"], image_std=pre["std"],
                                do_convert_rgb=True)


def _image(name: str, mode: str) -> Image.Image:
    img = Image.open(skimage_data_dir() / name)
    if mode == "P" and img.mode == "RGBA":
        return img.convert("RGB").convert("P")
    if mode == "I;16":
        return img.convert("L").convert("I;16")
    return img.convert(mode)


@pytest.mark.parametrize("mode", MODES)
def test_preprocessing_matches_vit_image_processor(tiny_artifacts, mode):
    manifest = Manifest.load(tiny_artifacts)
    ours = Preprocessor(manifest.preprocessing)
    theirs = hf_processor(manifest)
    for name in PHOTOS:
        img = _image(name, mode)
        expected = theirs(images=img, return_tensors="np")["pixel_values"]
        got = ours([img])
        assert got.shape == expected.shape == (1, 3, 56, 56)
        assert np.abs(got - expected).max() <= 1e-5, (name, mode)


def test_preprocessing_inputs_paths_bytes_arrays(tiny_artifacts):
    manifest = Manifest.load(tiny_artifacts)
    ours = Preprocessor(manifest.preprocessing, (84, 112))
    expected = hf_processor(manifest, (84, 112))(images=Image.open(skimage_data_dir() / "chelsea.png"),
                                                 return_tensors="np")["pixel_values"][0]
    path = skimage_data_dir() / "chelsea.png"
    array = np.asarray(Image.open(path).convert("RGB"))
    for item in (path, str(path), path.read_bytes(), Image.open(path), array):
        assert np.abs(ours([item])[0] - expected).max() <= 1e-5


def _hf_embeddings(hf_dir: Path, paths: list[Path], manifest: Manifest, cls: bool = False) -> np.ndarray:
    import torch
    from transformers import IJepaForImageClassification, IJepaModel

    pixels = hf_processor(manifest)(images=[Image.open(p) for p in paths], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        if cls:
            return IJepaForImageClassification.from_pretrained(hf_dir).eval()(pixels).logits.numpy()
        return IJepaModel.from_pretrained(hf_dir).eval()(pixels).last_hidden_state.mean(dim=1).numpy()


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_ijepa_embed_matches_transformers(tiny_artifacts, hf_dir, photos, tmp_path):
    out = subprocess.run([sys.executable, "-m", "ijepa_deploy.runtime", "--artifacts", str(tiny_artifacts),
                          str(photos["eval"]), str(photos["calib"] / "chelsea.png"), "--output", str(tmp_path / "e.npy"),
                          "--batch-size", "3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = np.load(tmp_path / "e.npy")
    listing = json.loads((tmp_path / "e.json").read_text())
    paths = [Path(p) for p in listing["inputs"]]
    assert [p.name for p in paths] == sorted(p.name for p in photos["eval"].iterdir()) + ["chelsea.png"]
    expected = _hf_embeddings(hf_dir, paths, Manifest.load(tiny_artifacts))
    assert got.shape == (5, 64) and got.dtype == np.float32
    assert _cos(got, expected).min() >= 0.9999


def test_classify_matches_transformers(tiny_cls_artifacts, hf_cls_dir, photos):
    paths = sorted(photos["eval"].iterdir())
    with Embedder.load(tiny_cls_artifacts) as embedder:
        logits = embedder.logits(paths)
        top = embedder.classify(paths, top_k=3)
    expected = _hf_embeddings(hf_cls_dir, paths, Manifest.load(tiny_cls_artifacts), cls=True)
    assert _cos(logits, expected).min() >= 0.9999 and np.abs(logits - expected).max() <= 1e-4
    assert [t[0][0] for t in top] == [f"class_{i}" for i in expected.argmax(1)]
    assert all(len(t) == 3 and t[0][1] >= t[1][1] >= t[2][1] for t in top)


def test_runtime_works_with_torch_unimportable(tiny_artifacts, photos, tmp_path):
    script = f"""
import sys
sys.modules['torch'] = None            # any `import torch` now raises ImportError
sys.modules['transformers'] = None
sys.argv = ['ijepa-embed', '--artifacts', {str(tiny_artifacts)!r}, {str(photos['eval'])!r},
            '--output', {str(tmp_path / 'x.npy')!r}, '--precision', 'int8']
from ijepa_deploy.runtime.cli import main
try:
    main()
except SystemExit as e:
    assert e.code in (0, None), e.code
leaked = [m for m in sys.modules if m.startswith(('ijepa_deploy.exporter', 'ijepa_deploy.reference_model', 'torch'))
          and sys.modules[m] is not None]
assert not leaked, leaked
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert np.load(tmp_path / "x.npy").shape == (4, 64)


def test_concurrent_callers_get_identical_results(tiny_artifacts, photos):
    paths = sorted(photos["calib"].iterdir()) + sorted(photos["eval"].iterdir())
    with Embedder.load(tiny_artifacts) as embedder:
        single = embedder.embed(paths, batch_size=3)
        results: dict[int, np.ndarray] = {}

        def work(i):
            results[i] = embedder.embed(paths[i:] + paths[:i], batch_size=2 + i % 3)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, got in results.items():
        assert np.allclose(np.roll(got, i, axis=0), single, atol=1e-5)


def test_any_n_batches_and_similarity(tiny_artifacts, photos):
    paths = sorted(photos["calib"].iterdir())
    with Embedder.load(tiny_artifacts) as embedder:
        full = embedder.embed(paths, batch_size=4)  # 6 images: batches 4 + 2, nothing padded
        one_by_one = np.concatenate([embedder.embed([p]) for p in paths])
        tokens = embedder.tokens(paths[:2])
        bigger = Embedder.load(tiny_artifacts, resolution=(84, 84)).tokens(paths[:1])
    assert np.allclose(full, one_by_one, atol=1e-5)
    assert tokens.shape == (2, 16, 64) and bigger.shape == (1, 36, 64)
    assert np.allclose(tokens.mean(1), full[:2], atol=1e-5)
    sim = Embedder.similarity(full)
    assert sim.shape == (6, 6) and np.allclose(np.diag(sim), 1, atol=1e-5)


# ------------------------------------------------------------------------- bad input


def test_corrupt_image_names_the_file(tiny_artifacts, tmp_path):
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes((skimage_data_dir() / "rocket.jpg").read_bytes()[:2000])
    with Embedder.load(tiny_artifacts) as embedder, pytest.raises(ImageError, match=r"truncated\.jpg"):
        embedder.embed([skimage_data_dir() / "chelsea.png", bad])
    out = subprocess.run([sys.executable, "-m", "ijepa_deploy.runtime", "--artifacts", str(tiny_artifacts), str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "truncated.jpg" in out.stderr and "Traceback" not in out.stderr


def test_skip_bad_continues(tiny_artifacts, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG garbage")
    Image.open(skimage_data_dir() / "coffee.png").save(tmp_path / "imgs" / "good.png")
    out = subprocess.run([sys.executable, "-m", "ijepa_deploy.runtime", "--artifacts", str(tiny_artifacts),
                          str(tmp_path / "imgs"), "--skip-bad", "--output", str(tmp_path / "o.npy")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "skipped: cannot read image" in out.stderr and "broken.png" in out.stderr
    assert np.load(tmp_path / "o.npy").shape == (1, 64)


def test_empty_input(tiny_artifacts):
    with Embedder.load(tiny_artifacts) as embedder, pytest.raises(ImageError, match="no images given"):
        embedder.embed([])


def test_folder_without_images(tiny_artifacts, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    out = subprocess.run([sys.executable, "-m", "ijepa_deploy.runtime", "--artifacts", str(tiny_artifacts),
                          str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1 and "contains no images" in out.stderr


def test_artifacts_without_manifest(tmp_path):
    with pytest.raises(ManifestError, match="has no manifest.json"):
        Embedder.load(tmp_path)


def test_manifest_from_newer_schema(tiny_artifacts, tmp_path):
    data = json.loads((tiny_artifacts / "manifest.json").read_text())
    data["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="schema 99, newer than this runtime's 1: upgrade ijepa-deploy"):
        Embedder.load(tmp_path)


def test_precision_not_exported(tiny_cls_artifacts):
    with pytest.raises(ManifestError, match=r"precision 'int8' was not exported .*available: fp32"):
        Embedder.load(tiny_cls_artifacts, precision="int8")


def test_bytes_garbage(tiny_artifacts):
    with Embedder.load(tiny_artifacts) as embedder, pytest.raises(ImageError, match=r"input #1 \(5 bytes\)"):
        embedder.embed([skimage_data_dir() / "coffee.png", b"abcde"])
