"""ijepa-export: fp32 artifacts, parity gates, manifest schema, atomicity, races, signals, CLI errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ijepa_deploy.exporter import float_steps
from ijepa_deploy.exporter.errors import ExportError, GateError
from ijepa_deploy.exporter import ExportOptions, export
from ijepa_deploy.reference_model import load_checkpoint
from ijepa_deploy.contract.manifest import SCHEMA_PATH, Manifest
from ijepa_deploy.runtime.similarity import cosine_rows

from .helpers import export_tiny, make_hf_checkpoint, one_error_line, run_module


def _schema_check(folder: Path) -> dict:
    import jsonschema

    data = json.loads((folder / "manifest.json").read_text())
    jsonschema.validate(data, json.loads(SCHEMA_PATH.read_text()))
    return data


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_module("export", *args, **kwargs)


def test_tiny_export_passes_gate_at_several_shapes(tiny_artifacts):
    data = _schema_check(tiny_artifacts)
    fp32 = data["artifacts"]["fp32"]
    shapes = {(c["batch"], c["height"], c["width"]) for c in fp32["validation"]["checks"]}
    assert {(1, 56, 56), (3, 56, 56), (4, 56, 56), (2, 84, 84), (2, 28, 140)} <= shapes
    assert all(c["max_abs"] <= 1e-4 and c["min_cosine"] >= 0.99999 for c in fp32["validation"]["checks"])
    assert fp32["validation"]["metrics"]["centered_cosine"] >= 0.99999  # on the held-out photos, for information
    assert data["checkpoint"]["kind"] == "huggingface-dir" and len(data["checkpoint"]["sha256"]) == 64
    assert data["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and data["resolution"]["dynamic"] is True
    assert data["preprocessing"]["exif_orientation"] is True
    assert data["gate_inputs"]["images"] == 16 and (tiny_artifacts / "gate_inputs.npy").is_file()
    assert "| fp32 | model_fp32.onnx |" in (tiny_artifacts / "report.md").read_text()
    assert not list(tiny_artifacts.parent.glob(".*partial"))


def test_fp32_graph_is_plain_onnx(tiny_artifacts):
    path = tiny_artifacts / "model_fp32.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" in ops and "Resize" in ops and "Erf" in ops
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    assert model.opset_import[0].version >= 17
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute}
    assert attrs["mode"] == b"cubic" and attrs["cubic_coeff_a"] == pytest.approx(-0.75)
    assert attrs["coordinate_transformation_mode"] == b"half_pixel"
    softmax_inputs = {n.input[0] for n in model.graph.node if n.op_type == "Softmax"}
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert {producers[i] for i in softmax_inputs} == {"MatMul"}  # the attention scale is folded into q


def test_fixed_resolution_bakes_the_table(tmp_path, hf_dir):
    folder = export_tiny(hf_dir, tmp_path, resolution=(42, 70), max_batch=2)
    model = onnx.load(str(folder / "model_fp32.onnx"))
    assert "Resize" not in {n.op_type for n in model.graph.node}
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 42, 70]
    data = _schema_check(folder)
    assert data["resolution"]["dynamic"] is False and data["preprocessing"]["height"] == 42
    session = ort.InferenceSession(str(folder / "model_fp32.onnx"))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 42, 70)).astype(np.float32)
    with torch.no_grad():
        ref = load_checkpoint(hf_dir).model(torch.from_numpy(x)).last_hidden_state.numpy()
    assert np.abs(session.run(["last_hidden_state"], {"pixel_values": x})[0] - ref).max() <= 1e-4


def test_classifier_exports_logits(tiny_cls_artifacts):
    data = _schema_check(tiny_cls_artifacts)
    assert [o["name"] for o in data["io"]["outputs"]] == ["last_hidden_state", "embedding", "logits"]
    assert data["labels"]["6"] == "class_6"
    assert max(c["logits_max_abs"] for c in data["artifacts"]["fp32"]["validation"]["checks"]) <= 1e-4


def test_broken_export_fails_gate_and_leaves_nothing(tmp_path, hf_dir, monkeypatch):
    """A wrong position table in the ONNX graph: the gate must catch it and leave nothing behind."""
    real_build = float_steps.build_graph
    corrupted = load_checkpoint(hf_dir).model
    with torch.no_grad():
        corrupted.pos_embed.mul_(1.5)
    monkeypatch.setattr(float_steps, "build_graph", lambda model, spec, path, **kw: real_build(corrupted, spec, path, **kw))
    with pytest.raises(GateError, match=r"model_fp32\.onnx failed its fp32 gate .*cosine .*max abs"):
        export(load_checkpoint(hf_dir), ExportOptions(output_dir=tmp_path, max_batch=2))
    assert list(tmp_path.iterdir()) == []  # no artifact, no temporary folder, no lock file


def test_interrupt_leaves_nothing(tmp_path, hf_dir):
    def interrupt(folder, manifest):
        assert (folder / "model_fp32.onnx").is_file()  # the work was under way
        raise KeyboardInterrupt

    options = ExportOptions(output_dir=tmp_path, max_batch=1)
    options.extra_steps.append(interrupt)
    with pytest.raises(KeyboardInterrupt):
        export(load_checkpoint(hf_dir), options)
    assert list(tmp_path.iterdir()) == []  # no artifact, no temporary folder, no lock file


def test_existing_folder_needs_overwrite(tmp_path, hf_dir):
    export_tiny(hf_dir, tmp_path, max_batch=1)
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        export_tiny(hf_dir, tmp_path, max_batch=1)
    export_tiny(hf_dir, tmp_path, max_batch=1, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # ijepa_ prefix dropped; no lock file left


@pytest.mark.parametrize("kind", ["file", "symlink", "foreign-folder"])
def test_overwrite_refuses_what_is_not_an_artifact_folder(tmp_path, hf_dir, kind):
    target = tmp_path / "tiny"
    if kind == "file":
        target.write_text("a user's file")
    elif kind == "symlink":
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("not ours")
    with pytest.raises(ExportError, match="not a folder|not an ijepa-export artifact folder"):
        export_tiny(hf_dir, tmp_path, max_batch=1, overwrite=True)
    assert not list(tmp_path.glob(".tiny.*partial")) and not list(tmp_path.glob("*replaced*"))
    assert target.exists() or target.is_symlink()


@pytest.mark.parametrize("name", ["..", ".", "a/b", ".hidden", "x" * 300])
def test_bad_names_are_refused(tmp_path, name):
    out = _cli("--variant", "test-tiny-p14", "--random-init", "--name", name, "--output-dir", str(tmp_path / "e"))
    assert "must be a plain folder name" in one_error_line(out)


def _medium_checkpoint(tmp_path) -> Path:
    return make_hf_checkpoint(tmp_path / "medium", hidden=256, layers=8, heads=4, mlp=1024, image=112, patch=16)


def _wait_for_partial(folder: Path, proc: subprocess.Popen, timeout: float = 60) -> Path:
    end = time.time() + timeout
    while time.time() < end:
        found = list(folder.glob(".*.partial")) if folder.exists() else []
        if found and (found[0] / "model_fp32.onnx").exists():
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    raise AssertionError("the export never started writing")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_leave_nothing(tmp_path, photos, sig):
    ckpt = _medium_checkpoint(tmp_path)
    out = tmp_path / "eng"
    proc = subprocess.Popen([sys.executable, "-m", "ijepa_deploy.cli.export", "--checkpoint", str(ckpt), "--precision",
                             "fp32,fp16,int8", "--calib-images", str(photos["calib"]), "--eval-images",
                             str(photos["eval"]), "--output-dir", str(out)], stderr=subprocess.PIPE, text=True)
    _wait_for_partial(out, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err[-1000:]
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == []


def test_sigkill_leftovers_are_removed_by_the_next_export(tmp_path, photos):
    ckpt = _medium_checkpoint(tmp_path)
    out = tmp_path / "eng"
    proc = subprocess.Popen([sys.executable, "-m", "ijepa_deploy.cli.export", "--checkpoint", str(ckpt),
                             "--output-dir", str(out)], stderr=subprocess.DEVNULL)
    partial = _wait_for_partial(out, proc)
    proc.kill()
    proc.wait()
    assert partial.exists()  # SIGKILL cannot clean up
    done = _cli("--checkpoint", str(ckpt), "--output-dir", str(out), "--max-batch", "1")
    assert done.returncode == 0, done.stderr
    assert "removed 1 stale temporary folder" in done.stderr and not partial.exists()
    assert sorted(p.name for p in out.iterdir()) == ["medium"]


def test_concurrent_exports_never_replace_each_other(tmp_path, hf_dir):
    out = tmp_path / "eng"
    cmd = [sys.executable, "-m", "ijepa_deploy.cli.export", "--checkpoint", str(hf_dir), "--output-dir", str(out),
           "--name", "shared", "--max-batch", "2"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    winners = [r for r in results if r[2] == 0]
    assert len(winners) == 1, [r[1][-300:] for r in results]
    for _, err, code in results:
        if code:
            assert code == 1 and ("another export into" in err or "already exists" in err), err[-500:]
    assert sorted(p.name for p in out.iterdir()) == ["shared"]
    Manifest.load(out / "shared").verify("fp32")


def test_non_registry_config_end_to_end(tmp_path):
    """D=256, 4 layers, patch 16: the architecture comes from config.json alone."""
    from transformers import IJepaModel

    from ijepa_deploy.runtime import Embedder

    folder = make_hf_checkpoint(tmp_path / "custom", hidden=256, layers=4, heads=8, mlp=512, image=64, patch=16)
    out = _cli("--checkpoint", str(folder), "--output-dir", str(tmp_path / "eng"), "--max-batch", "3")
    assert out.returncode == 0, out.stderr
    artifacts = Path(out.stdout.strip().splitlines()[-1])
    assert Manifest.load(artifacts).architecture.hidden_size == 256
    x = np.random.default_rng(1).integers(0, 255, (5, 64, 80, 3), dtype=np.uint8)
    with Embedder.load(artifacts, backend="onnxruntime") as embedder:
        got = embedder.embed(list(x), batch_size=2)
        pixels = embedder.preprocessor(list(x))
    with torch.no_grad():
        ref = IJepaModel.from_pretrained(folder).eval()(torch.from_numpy(pixels)).last_hidden_state.mean(1).numpy()
    assert got.shape == (5, 256) and cosine_rows(got, ref).min() >= 0.99999


@pytest.mark.parametrize("args,message", [
    (["--variant", "vit-xl", "--random-init"], "unknown variant 'vit-xl'; valid variants: "),
    (["--checkpoint", "/nonexistent/ckpt.safetensors"], "checkpoint not found: /nonexistent/ckpt.safetensors"),
    (["--checkpoint", "facebook/ijepa_vith14_1k"], "could not get facebook/ijepa_vith14_1k from the Hugging Face Hub"),
    (["--variant", "test-tiny-p14", "--random-init", "--resolution", "50x56"],
     "resolution 50x56 is not a multiple of the patch size 14"),
    (["--variant", "test-tiny-p14", "--random-init", "--resolution", "0x0"], "--resolution must be"),
    (["--variant", "test-tiny-p14", "--random-init", "--precision", "int8"], "need calibration images"),
    (["--variant", "test-tiny-p14", "--random-init", "--precision", "fp16"], "at least 2 held-out real images"),
    (["--variant", "test-tiny-p14", "--random-init", "--precision", "int4"], "unknown precision 'int4'"),
    (["--variant", "test-tiny-p14", "--random-init", "--max-batch", "-1"], "Invalid value for '--max-batch'"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    out = _cli(*args, "--output-dir", str(tmp_path / "eng"))
    assert message in one_error_line(out)
    assert not (tmp_path / "eng").exists() or not [p for p in (tmp_path / "eng").iterdir() if p.suffix != ".lock"]


def test_bad_preprocessor_config_is_one_line(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "badpre")
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_std": [0, 0, 0], "size": 56}))
    out = _cli("--checkpoint", str(folder), "--output-dir", str(tmp_path / "eng"))
    assert "preprocessor_config.json is not a usable ViTImageProcessor config" in one_error_line(out)
    (folder / "preprocessor_config.json").write_text("{not json")
    assert "not a usable" in one_error_line(_cli("--checkpoint", str(folder), "--output-dir", str(tmp_path / "eng")))


def test_cli_output_folder_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = _cli("--variant", "test-tiny-p14", "--random-init", "--output-dir", str(blocker / "engines"))
    assert "is not writable" in one_error_line(out)


def test_cli_help_has_examples():
    out = _cli("--help")
    assert out.returncode == 0
    for text in ("--variant", "--precision", "--resolution", "--calib-images", "Examples:", "build-engine",
                 "register-engine", "fp8", "bf16"):
        assert text in out.stdout


@pytest.mark.realsize
def test_vith14_real_size_export(vith14_artifacts):
    data = _schema_check(vith14_artifacts)
    fp32 = data["artifacts"]["fp32"]
    assert fp32["data_file"] == "model_fp32.onnx.data" and len(fp32["files"]) == 2
    assert fp32["bytes"] > 2.5e9
    assert sorted(p.name for p in vith14_artifacts.iterdir() if p.name.startswith("model_fp32")) == [
        "model_fp32.onnx", "model_fp32.onnx.data"]  # one consolidated data file, never one per tensor
    shapes = {(c["batch"], c["height"], c["width"]) for c in fp32["validation"]["checks"]}
    assert {(1, 224, 224), (2, 224, 224), (2, 252, 252), (2, 196, 308)} <= shapes
    assert fp32["validation"]["worst_max_abs"] <= 1e-4 and fp32["validation"]["worst_cosine"] >= 0.99999
    onnx.checker.check_model(str(vith14_artifacts / "model_fp32.onnx"), full_check=True)
