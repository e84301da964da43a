"""The reference model against transformers' IJepaModel / IJepaForImageClassification."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ijepa_deploy.reference_model import (CheckpointError, IJepaEncoder, UnknownVariantError, get_variant,
                                          load_checkpoint, sincos_position_table)

from .helpers import make_hf_checkpoint
from .helpers import make_original_checkpoint as _original_checkpoint

SHAPES = [(56, 56), (84, 84), (56, 98), (196 // 4 + 7, 308 // 4 + 7)]  # native, larger, non-square, non-multiple


def _hf(folder, cls=False):
    from transformers import IJepaForImageClassification, IJepaModel

    return (IJepaForImageClassification if cls else IJepaModel).from_pretrained(folder).eval()


@pytest.mark.parametrize("height,width", SHAPES)
def test_matches_transformers_last_hidden_state(hf_dir, height, width):
    ours = load_checkpoint(hf_dir).model
    theirs = _hf(hf_dir)
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    with torch.no_grad():
        expected = theirs(x, interpolate_pos_encoding=(height, width) != (56, 56)).last_hidden_state
        got = ours(x)
    assert (got.last_hidden_state - expected).abs().max().item() <= 1e-5
    assert torch.allclose(got.embedding, expected.mean(dim=1), atol=1e-5)


def test_real_patch14_nonsquare_196x308(tmp_path):
    """The issue's own example size, on a patch-14 model with the real 224 native grid (16x16)."""
    folder = make_hf_checkpoint(tmp_path / "p14", hidden=32, layers=1, heads=2, mlp=64, image=224, patch=14, seed=3)
    ours, theirs = load_checkpoint(folder).model, _hf(folder)
    x = torch.randn(1, 3, 196, 308)
    with torch.no_grad():
        diff = ours(x).last_hidden_state - theirs(x, interpolate_pos_encoding=True).last_hidden_state
    assert diff.abs().max().item() <= 1e-5


def test_classification_head_matches(hf_cls_dir):
    loaded = load_checkpoint(hf_cls_dir)
    assert loaded.architecture.num_labels == 7 and loaded.id2label[3] == "class_3"
    theirs = _hf(hf_cls_dir, cls=True)
    x = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        diff = loaded.model(x).logits - theirs(x).logits
    assert diff.abs().max().item() <= 1e-5


def test_original_checkpoint_context_and_target(hf_dir, tmp_path):
    path = _original_checkpoint(hf_dir, tmp_path / "IN1K-vit.tiny.14-300e.pth.tar")
    theirs = _hf(hf_dir)
    x = torch.randn(2, 3, 56, 56)
    ctx = load_checkpoint(path, variant="test-tiny-p14")
    tgt = load_checkpoint(path, variant="test-tiny-p14", encoder="target")
    assert ctx.source["network_key"] == "encoder" and tgt.source["network_key"] == "target_encoder"
    with torch.no_grad():
        ref = theirs(x).last_hidden_state
        assert (ctx.model(x).last_hidden_state - ref).abs().max().item() <= 1e-5
        assert (tgt.model(x).last_hidden_state - ref).abs().max().item() > 1e-2  # really the other network


def test_legacy_non_zip_checkpoint_loads(hf_dir, tmp_path):
    """Old torch.save files (the pre-1.6 format) cannot be memory-mapped: they load all the same."""
    path = _original_checkpoint(hf_dir, tmp_path / "zip.pth.tar")
    legacy = tmp_path / "IN1K-vit.legacy.14-300e.pth.tar"
    torch.save(torch.load(path, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint(legacy, variant="test-tiny-p14")
    with torch.no_grad():
        x = torch.randn(1, 3, 56, 56)
        ref = _hf(hf_dir)(x).last_hidden_state
        assert (loaded.model(x).last_hidden_state - ref).abs().max().item() <= 1e-5


def test_sincos_table_matches_original_formula():
    table = sincos_position_table(8, 3)[0].numpy()
    # position (row 1, col 2) -> index 5; first half encodes the column (w), second the row (h)
    omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
    col = np.concatenate([np.sin(2 * omega), np.cos(2 * omega)])
    row = np.concatenate([np.sin(1 * omega), np.cos(1 * omega)])
    assert np.allclose(table[5], np.concatenate([col, row]), atol=1e-6)


@pytest.mark.realsize
def test_vith14_real_size_forward():
    loaded = load_checkpoint(variant="vith14", random_init=True, seed=0)
    assert sum(p.numel() for p in loaded.model.parameters()) == 630_762_240
    assert loaded.source["kind"] == "random-init" and loaded.name == "vith14_1k"
    with torch.inference_mode():
        out = loaded.model(torch.randn(1, 3, 224, 224))
    assert out.last_hidden_state.shape == (1, 256, 1280) and out.embedding.shape == (1, 1280)
    assert torch.isfinite(out.last_hidden_state).all()


def test_variant_registry():
    assert get_variant("vith14").name == "vith14_1k" and get_variant("vitg16").architecture.hidden_size == 1408
    assert get_variant("vith16").architecture.image_size == 448
    assert get_variant("test-tiny-p14").test_only and not get_variant("vith14_22k").test_only
    with pytest.raises(UnknownVariantError, match="valid variants: .*vith14"):
        get_variant("vit-huge")


# ------------------------------------------------------------------------- errors


def test_corrupt_file_error(tmp_path, hf_dir):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "config.json").write_bytes((hf_dir / "config.json").read_bytes())
    (bad / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cannot read .*model\.safetensors.*corrupt or truncated"):
        load_checkpoint(bad)
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match=r"cannot read .*junk\.pth\.tar as a PyTorch checkpoint"):
        load_checkpoint(junk, variant="test-tiny-p14")


def test_wrong_architecture_error(hf_dir):
    with pytest.raises(CheckpointError, match=r"does not fit the architecture \(D=96, layers=3.*wrong shape"):
        load_checkpoint(hf_dir / "model.safetensors", variant="test-tiny-p16")


def test_missing_keys_error(tmp_path, hf_dir):
    state = load_file(str(hf_dir / "model.safetensors"))
    del state["encoder.layer.1.output.dense.weight"], state["layernorm.bias"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match=r"2 missing: blocks\.1\.mlp\.fc2\.weight, norm\.bias"):
        load_checkpoint(tmp_path / "partial.safetensors", variant="test-tiny-p14")


def test_unexpected_keys_error(tmp_path, hf_dir):
    state = load_file(str(hf_dir / "model.safetensors"))
    state["encoder.layer.2.output.dense.weight"] = torch.zeros(64, 128)
    save_file(state, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 unexpected: encoder\.layer\.2\.output\.dense\.weight"):
        load_checkpoint(tmp_path / "extra.safetensors", variant="test-tiny-p14")


def test_hub_unreachable_error():
    with pytest.raises(CheckpointError, match=r"could not get facebook/ijepa_vith14_1k .*--checkpoint PATH.*--random-init"):
        load_checkpoint("facebook/ijepa_vith14_1k")


def test_missing_path_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_sharded_checkpoint(tmp_path):
    from transformers import IJepaModel

    folder = make_hf_checkpoint(tmp_path / "src", seed=4)
    model = IJepaModel.from_pretrained(folder)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        diff = load_checkpoint(tmp_path / "sharded").model(x).last_hidden_state - model.eval()(x).last_hidden_state
    assert diff.abs().max().item() <= 1e-5


def test_empty_model_is_filled_by_loader(hf_dir):
    model = load_checkpoint(hf_dir).model
    assert isinstance(model, IJepaEncoder)
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in model.parameters())
