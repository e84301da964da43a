"""Data made offline for benchmarks, the demo and the tests: real photographs, and checkpoints whose
activations look like a trained ViT's.

Photographs: scikit-image ships about twenty real images. The held-out set is 18 whole photos; the
calibration set is crops (several positions and scales) of six *other* photos, so no pixel of a
held-out image is ever seen in calibration.

Outlier checkpoints: no trained I-JEPA can be downloaded here, so random-init encoders are given
the activation statistics reported for trained large transformers, at a chosen strength k:
- massive activations (Sun et al. 2024): two residual-stream channels carry a near-constant value
  about k times the typical magnitude from block 1 on (a large fc2 bias);
- high-norm tokens (Darcet et al. 2023): one block-1 MLP unit fires k times harder than the rest
  on a few tokens and writes into a third residual channel, so some tokens carry a massive value
  and others do not;
- LayerNorm gains that amplify a few channels (Wei et al. 2022, Bondarenko et al. 2021): in every
  block, four channels of each LayerNorm's gain are multiplied by k/4 and the reading weights
  divided by the same (the float function is unchanged, the quantized input is not);
- MLP units that fire far above the rest: in a third of the blocks, four hidden units get their
  input weights multiplied by k and their output weights divided by k: on the tokens where they
  fire, fc2's input has values k times the rest, which no shift or linear fold can absorb.
Constant outliers are what per-channel shifting and SmoothQuant remove; the token-dependent ones
are what makes mixed precision necessary at high strength.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HELD_OUT = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coins.png",
            "color.png", "grass.png", "gravel.png", "horse.png", "ihc.png", "logo.png", "moon.png", "page.png",
            "text.png", "microaneurysms.png", "motorcycle_right.png"]
CALIBRATION_SOURCES = ["coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "motorcycle_left.png", "retina.jpg",
                       "phantom.png"]


def skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def write_photos(root: Path, calib_count: int = 24) -> dict[str, Path]:
    """`root/eval`: 18 whole photographs; `root/calib`: `calib_count` crops of six other photographs."""
    data = skimage_data_dir()
    (root / "eval").mkdir(parents=True, exist_ok=True)
    (root / "calib").mkdir(parents=True, exist_ok=True)
    for name in HELD_OUT:
        shutil.copy(data / name, root / "eval" / name)
    rng = np.random.default_rng(0)
    for i in range(calib_count):
        source = CALIBRATION_SOURCES[i % len(CALIBRATION_SOURCES)]
        img = Image.open(data / source).convert("RGB")
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.45, 1.0))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        img.crop((x, y, x + side, y + side)).save(root / "calib" / f"{i:03d}_{Path(source).stem}.png")
    return {"eval": root / "eval", "calib": root / "calib"}


# A small ViT with the real structure, big enough for quantization noise to behave as in a large one.
OUTLIER_ARCH = dict(hidden_size=256, num_layers=6, num_heads=4, mlp_size=1024, image_size=224, patch_size=16)
STRENGTHS = {"mild": 20.0, "strong": 100.0, "extreme": 400.0}


@torch.no_grad()
def inject_outliers(model, strength: float, seed: int = 0) -> None:
    """Give `model` massive activations, amplifying LayerNorm gains and firing MLP units (in place)."""
    gen = np.random.default_rng(seed)
    d = model.arch.hidden_size
    massive = gen.choice(d, 3, replace=False)
    first = model.blocks[min(1, len(model.blocks) - 1)].mlp
    first.fc2.bias[massive[:2]] += strength
    unit = int(gen.integers(first.fc1.out_features))  # a high-norm-token unit
    first.fc1.weight[unit] *= strength ** 0.5
    first.fc2.weight[massive[2], unit] = strength ** 0.5 / max(float(first.fc1.weight[unit].norm()), 1e-6)
    gain = max(strength / 4.0, 1.0)
    for i, block in enumerate(model.blocks):
        for norm, readers in ((block.norm1, (block.attn.query, block.attn.key, block.attn.value)),
                              (block.norm2, (block.mlp.fc1,))):
            channels = torch.from_numpy(gen.choice(d, 4, replace=False))
            norm.weight[channels] *= gain
            norm.bias[channels] *= gain
            for linear in readers:
                linear.weight[:, channels] /= gain
        if i % 3 == 1:
            units = torch.from_numpy(gen.choice(block.mlp.fc1.out_features, 4, replace=False))
            block.mlp.fc1.weight[units] *= strength
            block.mlp.fc1.bias[units] *= strength
            block.mlp.fc2.weight[:, units] /= strength


def make_outlier_checkpoint(folder: Path, strength: float, seed: int = 0) -> Path:
    """A Hugging Face I-JEPA folder (config.json + model.safetensors) with outlier activations."""
    from ijepa_deploy.reference_model import Architecture, IJepaEncoder, save_hf_checkpoint

    model = IJepaEncoder.empty(Architecture(**OUTLIER_ARCH)).init_random(seed)
    inject_outliers(model, strength, seed)
    return save_hf_checkpoint(model.eval(), folder)


if __name__ == "__main__":  # python -m ijepa_deploy.bench.datasets DIR [CALIB_COUNT]: the demo's photographs
    import sys

    write_photos(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 24)
