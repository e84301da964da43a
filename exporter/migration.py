"""Outlier migration before quantization: per-channel shift and scale, exact in float.

Trained large ViTs have a few activation channels far outside the rest: channels that carry a
near-constant offset (massive activations acting as biases) and channels that LayerNorm gains
amplify. Per-tensor activation quantization spends its range on them. For a MatMul input X,

    X W + b = ((X - z) / s) (diag(s) W) + (b + z W)

so each channel j can be shifted by z_j (Outlier Suppression+, Wei et al. 2023) and scaled by s_j
(SmoothQuant, Xiao et al. 2022) without changing the function. Both are applied to outlier channels
only, and benign channels are left exactly as they were: rescaling every channel to the
calibration images' extremes (plain SmoothQuant) or centring every channel on them fits the
quantization to the calibration set, and held-out images then saturate it (measured: a benign model
calibrated on 5 photo crops fell from centered cosine 0.9999 to 0.97 on 16 other photos).
- shift: channels whose values sit far from 0 compared with their spread (|middle| > 3 x half
  their calibrated range: massive activations that act as biases) move to the middle of their
  range. (The attention context, a softmax-weighted mean, looks one-signed on a few images while
  its offset moves with the image: the spread test keeps it out.)
- scale: channels whose range exceeds 5 x the tensor's median channel range are divided by
  s_j = (range_j / (5 x median))^alpha (alpha 0.75 by default), and the readers' weight rows
  multiplied by it.
Where it lives:
- q/k/v read LayerNorm 1's output and fc1 reads LayerNorm 2's: the shift and the division go into
  the LayerNorm's bias and gain, diag(s) into the readers' weights, z W into their biases;
- proj reads the attention context, a softmax-weighted mean of v (rows sum to 1): the shift and
  the division go into v's bias and weights, diag(s) into proj's weights, z W into proj's bias;
- fc2 reads GELU's output, which nothing linear produces: only the shift is used, as an explicit
  subtraction in the graph before fc2's Q/DQ, with z W folded into fc2's bias.
The first three are folded into the PyTorch model (so the graph builder and the simulation see
them for free); fc2's shift travels in the quantization plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ijepa_deploy.reference_model import IJepaEncoder

from .calibration import CalibrationResult
from .layers import INPUTS, input_spec, module

OFFSET_RATIO = 3.0  # |middle| / half-range above which a channel is offset-dominated
OUTLIER_RATIO = 5.0  # range / median channel range above which a channel is an outlier


@dataclass
class Migration:
    """Per input tensor (calibration key): the shift z and scale s applied to it (s = 1: none)."""

    shift: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]

    def explicit_shift(self, tensor: str) -> np.ndarray | None:
        """The shift the graph subtracts explicitly before this input's Q/DQ (inputs no producer absorbs)."""
        return None if input_spec(tensor).foldable else self.shift.get(tensor)


def plan_migration(model: IJepaEncoder, calibration: CalibrationResult, alpha: float | None,
                   shift: bool = True) -> Migration:
    """Shifts (the middle of each channel's range) and SmoothQuant scales for every quantized input."""
    shifts, scales = {}, {}
    for i in range(len(model.blocks)):
        for spec in INPUTS:
            name = f"blocks.{i}.{spec.key}"
            st = calibration.stats[name]
            middle, half = (st.channel_hi + st.channel_lo) / 2.0, (st.channel_hi - st.channel_lo) / 2.0
            offset = np.abs(middle) > OFFSET_RATIO * half  # a near-constant value far from 0
            z = np.where(offset, middle, 0.0) if shift else np.zeros_like(middle)
            shifts[name] = z
            scales[name] = np.ones_like(z)
            if spec.foldable and alpha:
                act = np.maximum(np.maximum(np.abs(st.channel_hi - z), np.abs(st.channel_lo - z)), 1e-12)
                limit = OUTLIER_RATIO * np.median(act)
                scales[name] = np.where(act > limit, np.power(act / limit, alpha), 1.0)
    return Migration(shifts, scales)


@torch.no_grad()
def apply_migration(model: IJepaEncoder, migration: Migration) -> None:
    """Fold the shifts and scales of q/k/v, fc1 and proj into `model` in place (exact in float);
    fc2's shift is left to the graph (see `explicit_shift`)."""
    for i, block in enumerate(model.blocks):
        for spec in (inp for inp in INPUTS if inp.foldable):
            name = f"blocks.{i}.{spec.key}"
            z = torch.from_numpy(migration.shift[name]).float()
            s = torch.from_numpy(migration.scale[name]).float()
            readers = [module(block, r) for r in spec.readers]
            for reader in readers:  # z W into the bias first, with the unscaled weights
                reader.bias.add_(reader.weight @ z)
            producer = module(block, spec.producer)  # a LayerNorm (gain, bias) or v's linear (rows, bias)
            producer.bias.sub_(z).div_(s)
            producer.weight.div_(s[:, None] if isinstance(producer, torch.nn.Linear) else s)
            for reader in readers:
                reader.weight.mul_(s[None, :])
