"""The torch-free runtime against transformers (load_image + ViTImageProcessor + IJepaModel) on real
photos, on every CPU backend; and every way a hostile or unlucky user broke it before."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from ijepa_deploy.runtime import (BackendError, Embedder, EmbedderClosedError, ImageError, IntegrityError, Manifest,
                                  ManifestError, Preprocessor, UsageError)
from ijepa_deploy.runtime.backends.openvino_backend import openvino_unavailable_reason
from ijepa_deploy.runtime.similarity import cosine_rows

from .conftest import one_error_line, run_module, skimage_data_dir

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "logo.png"]
MODES = ["RGB", "L", "LA", "P", "PA", "RGBA", "CMYK", "I;16", "I", "F", "1"]
BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    openvino_unavailable_reason() is not None, reason=f"OpenVINO backend: {openvino_unavailable_reason()}"))]


def hf_processor(manifest: Manifest, size=None):
    from transformers import ViTImageProcessorPil

    pre = manifest.preprocessing
    h, w = size or (pre.height, pre.width)
    return ViTImageProcessorPil(size={"height": h, "width": w}, resample=2, do_rescale=True,
                                rescale_factor=pre.rescale_factor, image_mean=list(pre.mean), image_std=list(pre.std),
                                do_convert_rgb=True)


def _image(name: str, mode: str) -> Image.Image:
    img = Image.open(skimage_data_dir() / name)
    if mode == "P" and img.mode == "RGBA":
        return img.convert("RGB").convert("P")
    if mode == "I;16":
        return img.convert("L").convert("I;16")
    return img.convert(mode)


def _embed(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return run_module("ijepa_deploy.runtime", *args, **kwargs)


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def _rewrite_manifest(folder: Path, change) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))


# ------------------------------------------------------------------------- parity


@pytest.mark.parametrize("mode", MODES)
def test_preprocessing_matches_vit_image_processor(tiny_artifacts, mode):
    manifest = Manifest.load(tiny_artifacts)
    ours, theirs = Preprocessor(manifest.preprocessing), hf_processor(manifest)
    for name in PHOTOS:
        img = _image(name, mode)
        expected = theirs(images=img, return_tensors="np")["pixel_values"]
        got = ours([img])
        assert got.shape == expected.shape == (1, 3, 56, 56)
        assert np.abs(got - expected).max() <= 1e-5, (name, mode)


def test_preprocessing_inputs_paths_bytes_arrays(tiny_artifacts):
    manifest = Manifest.load(tiny_artifacts)
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


def test_exif_orientation_matches_transformers_load_image(tiny_artifacts, tmp_path):
    from transformers.image_utils import load_image

    manifest = Manifest.load(tiny_artifacts)
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_ijepa_embed_matches_transformers(tiny_artifacts, hf_dir, photos, tmp_path, backend):
    out = _embed(["--artifacts", str(tiny_artifacts), str(photos["eval"]), str(photos["calib"] / "000_coffee.png"),
                  "--output", str(tmp_path / "e.npy"), "--batch-size", "3", "--backend", backend])
    assert out.returncode == 0, out.stderr
    got = np.load(tmp_path / "e.npy")
    listing = json.loads((tmp_path / "e.json").read_text())
    assert listing["backend"].startswith(backend) and listing["sha256"] == hashlib.sha256(
        (tmp_path / "e.npy").read_bytes()).hexdigest()
    paths = [Path(p) for p in listing["inputs"]]
    assert [p.name for p in paths] == sorted(p.name for p in photos["eval"].iterdir()) + ["000_coffee.png"]
    expected = _hf_embeddings(hf_dir, paths, Manifest.load(tiny_artifacts))
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
    assert np.load(tmp_path / "x.npy").shape == (18, 64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_callers_get_identical_results(tiny_artifacts, photos, backend):
    paths = sorted(photos["calib"].iterdir())[:8] + sorted(photos["eval"].iterdir())[:6]
    with Embedder.load(tiny_artifacts, backend=backend) as embedder:
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_any_n_batches_generators_and_similarity(tiny_artifacts, photos, backend):
    paths = sorted(photos["calib"].iterdir())[:6]
    with Embedder.load(tiny_artifacts, backend=backend) as embedder:
        full = embedder.embed(paths, batch_size=4)  # 6 images: batches 4 + 2, nothing padded
        one_by_one = np.concatenate([embedder.embed(p) for p in paths])
        generated = embedder.embed((p for p in paths), batch_size=4)  # a generator is many images, not one
        tokens = embedder.tokens(paths[:2])
    with Embedder.load(tiny_artifacts, backend=backend, resolution=(84, 84)) as bigger:
        assert bigger.tokens(paths[:1]).shape == (1, 36, 64)
    assert np.allclose(full, one_by_one, atol=1e-5) and np.allclose(full, generated, atol=1e-6)
    assert tokens.shape == (2, 16, 64) and np.allclose(tokens.mean(1), full[:2], atol=1e-5)
    sim = Embedder.similarity(full)
    assert sim.shape == (6, 6) and np.allclose(np.diag(sim), 1, atol=1e-5)


def test_openvino_bf16_and_auto(tiny_artifacts, hf_dir, photos, tmp_path):
    from ijepa_deploy.runtime.backends.openvino_backend import cpu_has_bf16

    if openvino_unavailable_reason():
        pytest.skip(f"OpenVINO: {openvino_unavailable_reason()}")
    with Embedder.load(tiny_artifacts) as auto:
        assert auto.backend.name == ("openvino" if os.uname().machine in ("x86_64", "AMD64") else "onnxruntime")
    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    from .conftest import export_tiny

    folder = export_tiny(hf_dir, tmp_path, precisions=("fp32", "bf16"), eval_images=photos["eval"])
    art = Manifest.load(folder).artifact("bf16")
    assert art.mode_of == "fp32" and art.inference_precision == "bf16" and art.backends == ["openvino"]
    assert art.validation["metrics"]["centered_cosine"] >= 0.999
    with Embedder.load(folder, "bf16") as embedder:
        assert "bf16" in embedder.backend.describe()
        got = embedder.embed(sorted(photos["eval"].iterdir()))
    assert got.shape == (18, 64)
    with pytest.raises(BackendError, match="bf16 runs on openvino only"):
        Embedder.load(folder, "bf16", backend="onnxruntime")


def test_openvino_cache_keeps_precisions_apart(tiny_artifacts, tmp_path):
    """OpenVINO's cache key did not tell f32 from bf16 compilations of one file: bf16 then ran the f32
    blob and returned NaN. Each precision now has its own cache folder."""
    from ijepa_deploy.runtime.backends.openvino_backend import OpenVinoBackend, cpu_has_bf16

    if openvino_unavailable_reason() or not cpu_has_bf16():
        pytest.skip("needs OpenVINO and a CPU with bf16")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 56, 56)).astype(np.float32)
    outs = {}
    for precision in ("f32", "bf16", "bf16"):
        backend = OpenVinoBackend(tiny_artifacts / "model_fp32.onnx", inference_precision=precision,
                                  cache_dir=tmp_path / "cache")
        outs.setdefault(precision, []).append(backend.run(x)["embedding"])
    assert np.isfinite(outs["bf16"][0]).all() and np.array_equal(outs["bf16"][0], outs["bf16"][1])
    assert 0 < np.abs(outs["bf16"][0] - outs["f32"][0]).max() < 0.05
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["bf16", "f32"]


def test_openvino_missing_is_one_clear_line(tiny_artifacts):
    script = f"""
import sys
sys.modules['openvino'] = None
from ijepa_deploy.runtime import Embedder, BackendError
try:
    Embedder.load({str(tiny_artifacts)!r}, backend="openvino")
except BackendError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "OpenVINO is not installed (pip install 'ijepa-deploy[openvino]')" in out.stdout, out.stderr
    auto = subprocess.run([sys.executable, "-c", script.replace('backend="openvino"', 'backend="auto"') +
                           "\nprint(Embedder.load(" + repr(str(tiny_artifacts)) + ").backend.name)"],
                          capture_output=True, text=True)
    assert auto.stdout.strip().endswith("onnxruntime"), auto.stderr  # auto falls back without OpenVINO


# ------------------------------------------------------------------------- artifacts that cannot lie


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_onnx_is_refused(tiny_artifacts, tmp_path, photos):
    folder = _copy(tiny_artifacts, tmp_path)
    _flip_byte(folder / "model_fp32.onnx", 200_000)
    with pytest.raises(IntegrityError, match=r"model_fp32\.onnx does not match its sha256"):
        Embedder.load(folder)
    out = _embed(["--artifacts", str(folder), str(photos["eval"] / "moon.png")])
    assert "model_fp32.onnx does not match its sha256" in one_error_line(out)


def test_corrupted_external_data_is_refused(tiny_artifacts, tmp_path):
    """The .data file of a large model: one flipped byte gave cosine 0.995 and nothing to see."""
    from ijepa_deploy.exporter.export import file_record

    folder = _copy(tiny_artifacts, tmp_path)
    model = onnx.load(str(folder / "model_fp32.onnx"))
    onnx.save(model, str(folder / "model_fp32.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model_fp32.onnx.data", size_threshold=1024)

    def record(data):
        files = [file_record(folder / "model_fp32.onnx"), file_record(folder / "model_fp32.onnx.data")]
        data["artifacts"]["fp32"].update(files=[f.__dict__ for f in files], data_file="model_fp32.onnx.data",
                                         bytes=sum(f.bytes for f in files))

    _rewrite_manifest(folder, record)
    Embedder.load(folder, backend="onnxruntime").close()  # intact: loads
    _flip_byte(folder / "model_fp32.onnx.data", 5000)
    with pytest.raises(IntegrityError, match=r"model_fp32\.onnx\.data does not match its sha256"):
        Embedder.load(folder)


def test_swapped_model_is_refused(tiny_artifacts, tiny_cls_artifacts, tmp_path):
    from ijepa_deploy.exporter.export import file_record

    folder = _copy(tiny_artifacts, tmp_path)
    shutil.copy(tiny_cls_artifacts / "model_fp32.onnx", folder / "model_fp32.onnx")
    with pytest.raises(IntegrityError):
        Embedder.load(folder)
    with pytest.raises(BackendError, match="does not belong to this artifact folder"):  # even unverified
        Embedder.load(folder, verify=False, backend="onnxruntime")
    # an attacker who also rewrites the sha256 still cannot make a different model pass for this one
    _rewrite_manifest(folder, lambda d: d["artifacts"]["fp32"].update(files=[file_record(folder / "model_fp32.onnx").__dict__]))
    with pytest.raises(BackendError, match="does not belong"):
        Embedder.load(folder, backend="onnxruntime")


@pytest.mark.parametrize("name", ["../other/model.onnx", "/etc/passwd", "sub/model.onnx", ".hidden.onnx"])
def test_manifest_paths_are_confined(tiny_artifacts, tmp_path, name):
    folder = _copy(tiny_artifacts, tmp_path)
    _rewrite_manifest(folder, lambda d: d["artifacts"]["fp32"].update(file=name))
    with pytest.raises(ManifestError, match="artifacts.fp32.file"):
        Embedder.load(folder)


def test_symlink_out_of_the_folder_is_refused(tiny_artifacts, tmp_path):
    folder = _copy(tiny_artifacts, tmp_path)
    (folder / "model_fp32.onnx").unlink()
    (folder / "model_fp32.onnx").symlink_to(tiny_artifacts / "model_fp32.onnx")
    with pytest.raises(ManifestError, match="points outside the folder"):
        Embedder.load(folder)


@pytest.mark.parametrize("field,value,where", [
    (("preprocessing", "std"), [0, 0, 0], "preprocessing.std"),
    (("preprocessing", "height"), 10**12, "preprocessing.height"),
    (("batch", "max"), 10**9, "batch.max"),
    (("batch", "max"), "8", "batch.max"),
    (("architecture", "hidden_size"), -5, "architecture.hidden_size"),
    (("io",), {"inputs": []}, "io"),
    (("artifacts",), {}, "artifacts"),
    (("artifacts", "fp32", "files"), [], "artifacts.fp32.files"),
    (("artifacts", "fp32", "files", 0, "sha256"), "abc", "artifacts.fp32.files[0].sha256"),
    (("resolution", "min"), [1], "resolution.min"),
    (("preprocessing", "resample"), "magic", "preprocessing.resample"),
    (("engines",), {"fp16": {}}, "engines"),
])
def test_malformed_manifests_name_the_field(tiny_artifacts, tmp_path, field, value, where):
    folder = _copy(tiny_artifacts, tmp_path)

    def change(data):
        target = data
        for key in field[:-1]:
            target = target[key]
        target[field[-1]] = value

    _rewrite_manifest(folder, change)
    with pytest.raises(ManifestError) as exc:
        Embedder.load(folder)
    assert "manifest.json" in str(exc.value) and where in str(exc.value)
    out = _embed(["--artifacts", str(folder), str(skimage_data_dir() / "moon.png")])
    assert where in one_error_line(out)


def test_missing_keys_and_junk_manifests(tiny_artifacts, tmp_path):
    folder = _copy(tiny_artifacts, tmp_path)
    data = json.loads((folder / "manifest.json").read_text())
    for key in ("preprocessing", "io", "artifacts", "schema_version"):
        broken = {k: v for k, v in data.items() if k != key}
        (folder / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(ManifestError):
            Manifest.load(folder)
    for text in ("[]", "null", "{", '{"schema_version": 2}', "9" * 5000, '{"schema_version": true}'):
        (folder / "manifest.json").write_text(text)
        with pytest.raises(ManifestError):
            Manifest.load(folder)


def test_nan_outputs_name_the_image(tiny_artifacts, tmp_path, photos):
    from ijepa_deploy.exporter.export import file_record

    folder = _copy(tiny_artifacts, tmp_path)
    model = onnx.load(str(folder / "model_fp32.onnx"))
    norm = next(i for i in model.graph.initializer if i.name == "norm.weight")
    norm.CopyFrom(onnx.numpy_helper.from_array(np.full(64, np.nan, np.float32), "norm.weight"))
    onnx.save(model, str(folder / "model_fp32.onnx"))
    _rewrite_manifest(folder, lambda d: d["artifacts"]["fp32"].update(files=[file_record(folder / "model_fp32.onnx").__dict__]))
    with Embedder.load(folder, backend="onnxruntime") as embedder, pytest.raises(BackendError, match=r"NaN/Inf for .*moon\.png"):
        embedder.embed([photos["eval"] / "moon.png"])


def test_verification_can_be_skipped(tiny_artifacts, tmp_path):
    folder = _copy(tiny_artifacts, tmp_path)
    _rewrite_manifest(folder, lambda d: d["artifacts"]["fp32"]["files"][0].update(sha256="0" * 64))
    with pytest.raises(IntegrityError):
        Embedder.load(folder)
    Embedder.load(folder, verify=False).close()


# ------------------------------------------------------------------------- outputs that cannot be lost


def test_output_names_are_exact(tiny_artifacts, photos, tmp_path):
    image = str(photos["eval"] / "moon.png")
    for name in ("run.2024-01-01", "run.2024-01-02", "plain"):
        assert _embed(["--artifacts", str(tiny_artifacts), image, "--output", str(tmp_path / name)]).returncode == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["plain.json", "plain.npy", "run.2024-01-01", "run.2024-01-01.json", "run.2024-01-02",
                     "run.2024-01-02.json"]
    assert np.load(tmp_path / "run.2024-01-01").shape == (1, 64)


def test_failed_write_keeps_previous_results(tiny_artifacts, photos, tmp_path):
    out = tmp_path / "emb.npy"
    assert _embed(["--artifacts", str(tiny_artifacts), str(photos["eval"] / "moon.png"), "--output", str(out)]).returncode == 0
    before = out.read_bytes(), (tmp_path / "emb.json").read_text()

    def small_files():  # the second run may write at most 10 KB per file: its .npy cannot fit
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))

    failed = subprocess.run([sys.executable, "-m", "ijepa_deploy.runtime", "--artifacts", str(tiny_artifacts),
                             str(photos["eval"]), str(photos["calib"]), "--output", str(out)],
                            capture_output=True, text=True, preexec_fn=small_files)
    assert "nothing was replaced" in one_error_line(failed)
    assert (out.read_bytes(), (tmp_path / "emb.json").read_text()) == before  # the earlier results are intact
    assert json.loads(before[1])["sha256"] == hashlib.sha256(before[0]).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.json", "emb.npy"]  # no temporary left


@pytest.mark.parametrize("where", ["missing-folder", "read-only", "is-a-folder"])
def test_unwritable_output_fails_before_any_work(tiny_artifacts, photos, tmp_path, where):
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
    out = _embed(["--artifacts", str(tmp_path / "no-artifacts"), str(photos["eval"]), "--output", str(target)])
    assert "cannot write output" in one_error_line(out)


# ------------------------------------------------------------------------- inputs


def test_decompression_bomb_is_refused_before_decoding(tiny_artifacts, tmp_path):
    bombs = tmp_path / "imgs"
    bombs.mkdir()
    Image.new("1", (13000, 13000)).save(bombs / "bomb.png")  # a small file that decodes to 169 Mpixels
    assert (bombs / "bomb.png").stat().st_size < 1_000_000
    shutil.copy(skimage_data_dir() / "coffee.png", bombs / "good.png")
    with Embedder.load(tiny_artifacts) as embedder, pytest.raises(ImageError, match="over the limit"):
        embedder.embed([bombs / "bomb.png"])
    out = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "ijepa_deploy.runtime", "--artifacts",
                          str(tiny_artifacts), str(bombs), "--skip-bad", "--output", str(tmp_path / "o.npy")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "skipped:" in out.stderr and "bomb.png" in out.stderr
    assert np.load(tmp_path / "o.npy").shape == (1, 64)
    peak_kb = int(next(l for l in out.stderr.splitlines() if "Maximum resident" in l).split()[-1])
    assert peak_kb < 1_500_000  # the bomb was never decoded (it would take > 1 GB)


@pytest.mark.timeout(60)
def test_fifo_is_refused_without_hanging(tiny_artifacts, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with Embedder.load(tiny_artifacts) as embedder, pytest.raises(ImageError, match="not a regular file"):
        embedder.embed([fifo])


def test_embed_after_close_says_so(tiny_artifacts, photos):
    embedder = Embedder.load(tiny_artifacts)
    embedder.close()
    with pytest.raises(EmbedderClosedError, match="this Embedder is closed"):
        embedder.embed([photos["eval"] / "moon.png"])
    embedder.close()  # idempotent


def test_batch_size_must_be_positive(tiny_artifacts, photos):
    with Embedder.load(tiny_artifacts) as embedder:
        for bad in (0, -1):
            with pytest.raises(UsageError, match="batch size must be a positive integer"):
                embedder.embed([photos["eval"] / "moon.png"], batch_size=bad)
    for bad in ("0", "-1"):
        out = _embed(["--artifacts", str(tiny_artifacts), str(photos["eval"]), "--batch-size", bad])
        assert "--batch-size" in one_error_line(out)


def test_corrupt_image_names_the_file(tiny_artifacts, tmp_path):
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes((skimage_data_dir() / "rocket.jpg").read_bytes()[:2000])
    with Embedder.load(tiny_artifacts) as embedder, pytest.raises(ImageError, match=r"truncated\.jpg"):
        embedder.embed([skimage_data_dir() / "chelsea.png", bad])
    assert "truncated.jpg" in one_error_line(_embed(["--artifacts", str(tiny_artifacts), str(bad)]))


def test_skip_bad_continues(tiny_artifacts, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG garbage")
    Image.open(skimage_data_dir() / "coffee.png").save(tmp_path / "imgs" / "good.png")
    out = _embed(["--artifacts", str(tiny_artifacts), str(tmp_path / "imgs"), "--skip-bad", "--output",
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
def test_cli_input_errors_are_one_line(tiny_artifacts, photos, args, message, tmp_path):
    out = _embed(["--artifacts", str(tiny_artifacts), str(photos["eval"] / "moon.png"), *args], cwd=tmp_path)
    assert message in one_error_line(out)


def test_empty_input_and_missing_things(tiny_artifacts, tmp_path):
    with Embedder.load(tiny_artifacts) as embedder, pytest.raises(ImageError, match="no images given"):
        embedder.embed([])
    (tmp_path / "empty.txt").write_text("# a path list with no paths\n")
    (tmp_path / "list.txt").write_text("missing.png\n")
    (tmp_path / "sub").mkdir()
    assert "lists no images" in one_error_line(_embed(["--artifacts", str(tiny_artifacts), str(tmp_path / "empty.txt")]))
    assert "missing.png" in one_error_line(_embed(["--artifacts", str(tiny_artifacts), str(tmp_path / "list.txt")]))
    assert "contains no images" in one_error_line(_embed(["--artifacts", str(tiny_artifacts), str(tmp_path / "sub")]))
    with pytest.raises(ManifestError, match="has no manifest.json"):
        Embedder.load(tmp_path)


def test_manifest_from_other_schemas(tiny_artifacts, tmp_path):
    folder = _copy(tiny_artifacts, tmp_path)
    _rewrite_manifest(folder, lambda d: d.update(schema_version=99))
    with pytest.raises(ManifestError, match="schema 99, newer than this runtime's 2: upgrade ijepa-deploy"):
        Embedder.load(folder)
    _rewrite_manifest(folder, lambda d: d.update(schema_version=1))
    with pytest.raises(ManifestError, match="schema 1, written by an older ijepa-export .* re-export"):
        Embedder.load(folder)


def test_precision_not_exported(tiny_cls_artifacts):
    with pytest.raises(ManifestError, match=r"precision 'int8' was not exported .*available: fp32"):
        Embedder.load(tiny_cls_artifacts, precision="int8")


def test_bytes_garbage(tiny_artifacts):
    with Embedder.load(tiny_artifacts) as embedder, pytest.raises(ImageError, match=r"input #1 \(5 bytes\)"):
        embedder.embed([skimage_data_dir() / "coffee.png", b"abcde"])
