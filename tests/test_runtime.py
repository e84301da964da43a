"""The torch-free runtime against transformers (load_image + ViTImageProcessor + IJepaModel) on real
photos, on every CPU backend; and every way a hostile or unlucky user broke it before."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ijepa_deploy.runtime import (BackendError, Embedder, Manifest, Preprocessor)
from ijepa_deploy.runtime.backends.openvino_backend import openvino_unavailable_reason
from ijepa_deploy.runtime.similarity import cosine_rows

from .helpers import MODES, PHOTOS, cpu_backends, embed_cli, hf_processor, image_in_mode, skimage_data_dir

# ------------------------------------------------------------------------- parity


CPU_BACKENDS = cpu_backends()


@pytest.mark.parametrize("mode", MODES)
def test_preprocessing_matches_vit_image_processor(tiny_fp32, mode):
    manifest = Manifest.load(tiny_fp32)
    ours, theirs = Preprocessor(manifest.preprocessing), hf_processor(manifest)
    for name in PHOTOS:
        img = image_in_mode(name, mode)
        expected = theirs(images=img, return_tensors="np")["pixel_values"]
        got = ours([img])
        assert got.shape == expected.shape == (1, 3, 56, 56)
        assert np.abs(got - expected).max() <= 1e-5, (name, mode)


def test_preprocessing_inputs_paths_bytes_arrays(tiny_fp32):
    manifest = Manifest.load(tiny_fp32)
    ours = Preprocessor(manifest.preprocessing, (84, 112))
    path = skimage_data_dir() / "chelsea.png"
    expected = hf_processor(manifest, (84, 112))(images=Image.open(path), return_tensors="np")["pixel_values"][0]
    array = np.asarray(Image.open(path).convert("RGB"))
    for item in (path, str(path), path.read_bytes(), Image.open(path), array):
        assert np.abs(ours([item])[0] - expected).max() <= 1e-5


def _exif_rotated(tmp_path: Path) -> Path:
    """A phone photo: pixels stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    img = Image.open(skimage_data_dir() / "chelsea.png").convert("RGB").rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_matches_transformers_load_image(tiny_fp32, tmp_path):
    from transformers.image_utils import load_image

    manifest = Manifest.load(tiny_fp32)
    path = _exif_rotated(tmp_path)
    expected = hf_processor(manifest)(images=load_image(str(path)), return_tensors="np")["pixel_values"]
    got = Preprocessor(manifest.preprocessing)([path])
    assert np.abs(got - expected).max() <= 1e-5
    sideways = hf_processor(manifest)(images=Image.open(path), return_tensors="np")["pixel_values"]
    assert np.abs(sideways - expected).max() > 0.1  # the defect: ignoring EXIF embeds the photo sideways
    from dataclasses import replace

    off = Preprocessor(replace(manifest.preprocessing, exif_orientation=False))([path])
    assert np.abs(off - sideways).max() <= 1e-5  # the option turns it off


def _hf_embeddings(hf_dir: Path, paths: list, manifest: Manifest, cls: bool = False) -> np.ndarray:
    import torch
    from transformers import IJepaForImageClassification, IJepaModel
    from transformers.image_utils import load_image

    pixels = hf_processor(manifest)(images=[load_image(str(p)) for p in paths], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        if cls:
            return IJepaForImageClassification.from_pretrained(hf_dir).eval()(pixels).logits.numpy()
        return IJepaModel.from_pretrained(hf_dir).eval()(pixels).last_hidden_state.mean(dim=1).numpy()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ijepa_embed_matches_transformers(tiny_fp32, hf_dir, photos, tmp_path, backend):
    out = embed_cli(["--artifacts", str(tiny_fp32), str(photos["eval"]), str(photos["calib"] / "000_coffee.png"),
                  "--output", str(tmp_path / "e.npy"), "--batch-size", "3", "--backend", backend])
    assert out.returncode == 0, out.stderr
    got = np.load(tmp_path / "e.npy")
    listing = json.loads((tmp_path / "e.json").read_text())
    assert listing["backend"].startswith(backend) and listing["sha256"] == hashlib.sha256(
        (tmp_path / "e.npy").read_bytes()).hexdigest()
    paths = [Path(p) for p in listing["inputs"]]
    assert [p.name for p in paths] == sorted(p.name for p in photos["eval"].iterdir()) + ["000_coffee.png"]
    expected = _hf_embeddings(hf_dir, paths, Manifest.load(tiny_fp32))
    assert got.shape == (19, 64) and got.dtype == np.float32
    assert cosine_rows(got, expected).min() >= 0.9999


def test_classify_matches_transformers(tiny_cls_artifacts, hf_cls_dir, photos):
    paths = sorted(photos["eval"].iterdir())
    with Embedder.load(tiny_cls_artifacts, backend="onnxruntime") as embedder:
        logits = embedder.logits(paths)
        top = embedder.classify(paths, top_k=3)
    expected = _hf_embeddings(hf_cls_dir, paths, Manifest.load(tiny_cls_artifacts), cls=True)
    assert cosine_rows(logits, expected).min() >= 0.9999 and np.abs(logits - expected).max() <= 1e-4
    assert [t[0][0] for t in top] == [f"class_{i}" for i in expected.argmax(1)]


def test_runtime_works_with_torch_unimportable(tiny_artifacts, photos, tmp_path):
    script = f"""
import sys
sys.modules['torch'] = None            # any `import torch` now raises ImportError
sys.modules['transformers'] = None
sys.argv = ['ijepa-embed', '--artifacts', {str(tiny_artifacts)!r}, {str(photos['eval'])!r},
            '--output', {str(tmp_path / 'x.npy')!r}, '--precision', 'int8-cpu']
from ijepa_deploy.cli.embed import main
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
    assert np.load(tmp_path / "x.npy").shape == (18, 64)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_concurrent_callers_get_identical_results(tiny_fp32, photos, backend):
    paths = sorted(photos["calib"].iterdir())[:8] + sorted(photos["eval"].iterdir())[:6]
    with Embedder.load(tiny_fp32, backend=backend) as embedder:
        single = embedder.embed(paths, batch_size=3)
        results: dict[int, np.ndarray] = {}

        def work(i):
            results[i] = embedder.embed(paths[i:] + paths[:i], batch_size=2 + i % 3)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 4
    for i, got in results.items():
        assert np.allclose(np.roll(got, i, axis=0), single, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_any_n_batches_generators_and_similarity(tiny_fp32, photos, backend):
    paths = sorted(photos["calib"].iterdir())[:6]
    with Embedder.load(tiny_fp32, backend=backend) as embedder:
        full = embedder.embed(paths, batch_size=4)  # 6 images: batches 4 + 2, nothing padded
        one_by_one = np.concatenate([embedder.embed(p) for p in paths])
        generated = embedder.embed((p for p in paths), batch_size=4)  # a generator is many images, not one
        tokens = embedder.tokens(paths[:2])
    with Embedder.load(tiny_fp32, backend=backend, resolution=(84, 84)) as bigger:
        assert bigger.tokens(paths[:1]).shape == (1, 36, 64)
    assert np.allclose(full, one_by_one, atol=1e-5) and np.allclose(full, generated, atol=1e-6)
    assert tokens.shape == (2, 16, 64) and np.allclose(tokens.mean(1), full[:2], atol=1e-5)
    sim = Embedder.similarity(full)
    assert sim.shape == (6, 6) and np.allclose(np.diag(sim), 1, atol=1e-5)


def test_openvino_bf16_and_auto(tiny_fp32, hf_dir, photos, tmp_path):
    from ijepa_deploy.runtime.backends.openvino_backend import cpu_has_bf16

    if openvino_unavailable_reason():
        pytest.skip(f"OpenVINO: {openvino_unavailable_reason()}")
    with Embedder.load(tiny_fp32) as auto:
        assert auto.backend.name == ("openvino" if os.uname().machine in ("x86_64", "AMD64") else "onnxruntime")
    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    from .helpers import export_tiny

    folder = export_tiny(hf_dir, tmp_path, precisions=("fp32", "bf16"), eval_images=photos["eval"])
    art = Manifest.load(folder).artifact("bf16")
    assert art.mode_of == "fp32" and art.inference_precision == "bf16" and art.backends == ("openvino",)
    assert art.validation.metrics["centered_cosine"] >= 0.999
    with Embedder.load(folder, "bf16") as embedder:
        assert "bf16" in embedder.backend.describe()
        got = embedder.embed(sorted(photos["eval"].iterdir()))
    assert got.shape == (18, 64)
    with pytest.raises(BackendError, match="bf16 runs on openvino only"):
        Embedder.load(folder, "bf16", backend="onnxruntime")


def test_openvino_cache_keeps_precisions_apart(tiny_fp32, tmp_path):
    """OpenVINO's cache key did not tell f32 from bf16 compilations of one file: bf16 then ran the f32
    blob and returned NaN. Each precision now has its own cache folder."""
    from ijepa_deploy.runtime.backends.openvino_backend import OpenVinoBackend, cpu_has_bf16

    if openvino_unavailable_reason() or not cpu_has_bf16():
        pytest.skip("needs OpenVINO and a CPU with bf16")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 56, 56)).astype(np.float32)
    outs = {}
    for precision in ("f32", "bf16", "bf16"):
        backend = OpenVinoBackend(tiny_fp32 / "model_fp32.onnx", inference_precision=precision,
                                  cache_dir=tmp_path / "cache")
        outs.setdefault(precision, []).append(backend.run(x)["embedding"])
    assert np.isfinite(outs["bf16"][0]).all() and np.array_equal(outs["bf16"][0], outs["bf16"][1])
    assert 0 < np.abs(outs["bf16"][0] - outs["f32"][0]).max() < 0.05
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["bf16", "f32"]


def test_openvino_missing_is_one_clear_line(tiny_fp32):
    script = f"""
import sys
sys.modules['openvino'] = None
from ijepa_deploy.runtime import Embedder, BackendError
try:
    Embedder.load({str(tiny_fp32)!r}, backend="openvino")
except BackendError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "OpenVINO is not installed (pip install 'ijepa-deploy[openvino]')" in out.stdout, out.stderr
    auto = subprocess.run([sys.executable, "-c", script.replace('backend="openvino"', 'backend="auto"') +
                           "\nprint(Embedder.load(" + repr(str(tiny_fp32)) + ").backend.name)"],
                          capture_output=True, text=True)
    assert auto.stdout.strip().endswith("onnxruntime"), auto.stderr  # auto falls back without OpenVINO
