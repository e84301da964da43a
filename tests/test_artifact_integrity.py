"""Artifacts that cannot lie: every way a damaged, swapped or edited artifact folder was tried, refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from ijepa_deploy.runtime import (BackendError, Embedder, IntegrityError, Manifest, ManifestError)

from .helpers import copy_folder, embed_cli, one_error_line, rewrite_manifest, skimage_data_dir

# ------------------------------------------------------------------------- artifacts that cannot lie


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_onnx_is_refused(tiny_fp32, tmp_path, photos):
    folder = copy_folder(tiny_fp32, tmp_path)
    _flip_byte(folder / "model_fp32.onnx", 200_000)
    with pytest.raises(IntegrityError, match=r"model_fp32\.onnx does not match its sha256"):
        Embedder.load(folder)
    out = embed_cli(["--artifacts", str(folder), str(photos["eval"] / "moon.png")])
    assert "model_fp32.onnx does not match its sha256" in one_error_line(out)


def test_corrupted_external_data_is_refused(tiny_fp32, tmp_path):
    """The .data file of a large model: one flipped byte gave cosine 0.995 and nothing to see."""
    from ijepa_deploy.contract.manifest import FileRecord

    folder = copy_folder(tiny_fp32, tmp_path)
    model = onnx.load(str(folder / "model_fp32.onnx"))
    onnx.save(model, str(folder / "model_fp32.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model_fp32.onnx.data", size_threshold=1024)

    def record(data):
        files = [FileRecord.of(folder / "model_fp32.onnx"), FileRecord.of(folder / "model_fp32.onnx.data")]
        data["artifacts"]["fp32"].update(files=[f.__dict__ for f in files], data_file="model_fp32.onnx.data",
                                         bytes=sum(f.bytes for f in files))

    rewrite_manifest(folder, record)
    Embedder.load(folder, backend="onnxruntime").close()  # intact: loads
    _flip_byte(folder / "model_fp32.onnx.data", 5000)
    with pytest.raises(IntegrityError, match=r"model_fp32\.onnx\.data does not match its sha256"):
        Embedder.load(folder)


def test_swapped_model_is_refused(tiny_fp32, tiny_cls_artifacts, tmp_path):
    from ijepa_deploy.contract.manifest import FileRecord

    folder = copy_folder(tiny_fp32, tmp_path)
    shutil.copy(tiny_cls_artifacts / "model_fp32.onnx", folder / "model_fp32.onnx")
    with pytest.raises(IntegrityError):
        Embedder.load(folder)
    with pytest.raises(BackendError, match="does not belong to this artifact folder"):  # even unverified
        Embedder.load(folder, verify=False, backend="onnxruntime")
    # an attacker who also rewrites the sha256 still cannot make a different model pass for this one
    rewrite_manifest(folder, lambda d: d["artifacts"]["fp32"].update(files=[FileRecord.of(folder / "model_fp32.onnx").__dict__]))
    with pytest.raises(BackendError, match="does not belong"):
        Embedder.load(folder, backend="onnxruntime")


@pytest.mark.parametrize("name", ["../other/model.onnx", "/etc/passwd", "sub/model.onnx", ".hidden.onnx"])
def test_manifest_paths_are_confined(tiny_fp32, tmp_path, name):
    folder = copy_folder(tiny_fp32, tmp_path)
    rewrite_manifest(folder, lambda d: d["artifacts"]["fp32"].update(file=name))
    with pytest.raises(ManifestError, match="artifacts.fp32.file"):
        Embedder.load(folder)


def test_symlink_out_of_the_folder_is_refused(tiny_fp32, tmp_path):
    folder = copy_folder(tiny_fp32, tmp_path)
    (folder / "model_fp32.onnx").unlink()
    (folder / "model_fp32.onnx").symlink_to(tiny_fp32 / "model_fp32.onnx")
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
def test_malformed_manifests_name_the_field(tiny_fp32, tmp_path, field, value, where):
    folder = copy_folder(tiny_fp32, tmp_path)

    def change(data):
        target = data
        for key in field[:-1]:
            target = target[key]
        target[field[-1]] = value

    rewrite_manifest(folder, change, fix_identities=False)
    with pytest.raises(ManifestError) as exc:
        Embedder.load(folder)
    assert "manifest.json" in str(exc.value) and where in str(exc.value)
    out = embed_cli(["--artifacts", str(folder), str(skimage_data_dir() / "moon.png")])
    assert where in one_error_line(out)


def test_missing_keys_and_junk_manifests(tiny_fp32, tmp_path):
    folder = copy_folder(tiny_fp32, tmp_path)
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


def test_nan_outputs_name_the_image(tiny_fp32, tmp_path, photos):
    from ijepa_deploy.contract.manifest import FileRecord

    folder = copy_folder(tiny_fp32, tmp_path)
    model = onnx.load(str(folder / "model_fp32.onnx"))
    norm = next(i for i in model.graph.initializer if i.name == "norm.weight")
    norm.CopyFrom(onnx.numpy_helper.from_array(np.full(64, np.nan, np.float32), "norm.weight"))
    onnx.save(model, str(folder / "model_fp32.onnx"))
    rewrite_manifest(folder, lambda d: d["artifacts"]["fp32"].update(files=[FileRecord.of(folder / "model_fp32.onnx").__dict__]))
    with Embedder.load(folder, backend="onnxruntime") as embedder, pytest.raises(BackendError, match=r"NaN/Inf for .*moon\.png"):
        embedder.embed([photos["eval"] / "moon.png"])


def test_verification_can_be_skipped(tiny_fp32, tmp_path):
    folder = copy_folder(tiny_fp32, tmp_path)
    rewrite_manifest(folder, lambda d: d["artifacts"]["fp32"]["files"][0].update(sha256="0" * 64))
    with pytest.raises(IntegrityError):
        Embedder.load(folder)
    Embedder.load(folder, verify=False).close()


def test_edited_file_records_break_the_identity(tiny_fp32, tmp_path):
    """A manifest whose file hashes were edited (or copied from another model) no longer gives the identity
    it records: refused at load, before any file is opened, even with verify=False."""
    folder = copy_folder(tiny_fp32, tmp_path)
    rewrite_manifest(folder, lambda d: d["artifacts"]["fp32"]["files"][0].update(sha256="0" * 64),
                      fix_identities=False)
    with pytest.raises(ManifestError, match=r"artifacts\.fp32\.identity is not the identity"):
        Embedder.load(folder, verify=False)
