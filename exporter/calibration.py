"""Streaming calibration: statistics of every weight MatMul's input, gathered on the PyTorch model.

Forward hooks on the reference model's q/k/v, proj, fc1 and fc2 linears see exactly the tensors
that the ONNX graph's quantized MatMuls read (q, k and v share one input: norm1's output). Every
statistic is updated batch by batch, so memory does not grow with the number of images:
- per tensor: min and max (the `minmax` range);
- per input channel: min and max (SmoothQuant's scales, and `minmax` ranges after smoothing);
- for `percentile` and `entropy`: histograms, kept and reduced by ONNX Runtime's own
  `HistogramCollector`, fed one batch at a time (so batches of any size mix freely).
The float model's pooled embeddings and tokens on the calibration images are kept too: they are
the reference of the sensitivity analysis.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ijepa_deploy.reference_model import IJepaEncoder
from ijepa_deploy.runtime.preprocessing import Preprocessor

from .layers import input_keys, input_spec, module
from .progress import progress

METHODS = ("minmax", "percentile", "entropy")
HIST_SETTINGS = {"percentile": {"num_bins": 2048, "num_quantized_bins": 128, "percentile": 99.999},
                 "entropy": {"num_bins": 128, "num_quantized_bins": 128, "percentile": 99.999}}


def hooked_inputs(model: IJepaEncoder) -> dict[str, torch.nn.Linear]:
    """One reader per input tensor (q for q/k/v), whose input the hooks observe."""
    return {key: module(model, key.rsplit(".", 2)[0] + "." + input_spec(key).readers[0])
            for key in input_keys(len(model.blocks))}


@dataclass
class TensorStats:
    lo: float = float("inf")
    hi: float = float("-inf")
    channel_lo: np.ndarray | None = None
    channel_hi: np.ndarray | None = None

    def update(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1, x.shape[-1])
        c_lo, c_hi = flat.amin(0).double().numpy(), flat.amax(0).double().numpy()
        self.channel_lo = c_lo if self.channel_lo is None else np.minimum(self.channel_lo, c_lo)
        self.channel_hi = c_hi if self.channel_hi is None else np.maximum(self.channel_hi, c_hi)
        self.lo, self.hi = min(self.lo, float(c_lo.min())), max(self.hi, float(c_hi.max()))


@dataclass
class CalibrationResult:
    stats: dict[str, TensorStats]
    histograms: dict[tuple[str, bool], object] = field(default_factory=dict)  # (method, symmetric) -> collector
    reference: dict[str, np.ndarray] = field(default_factory=dict)  # float outputs on the calibration images
    pixels: list[np.ndarray] = field(default_factory=list)  # the calibration batches (for the sensitivity pass)


def histogram_collector(method: str, symmetric: bool):
    from onnxruntime.quantization.calibrate import HistogramCollector

    return HistogramCollector(method=method, symmetric=symmetric, scenario="same", **HIST_SETTINGS[method])


def calibrate(model: IJepaEncoder, images: list[Path], preprocessor: Preprocessor, *, method: str = "minmax",
              symmetries: tuple[bool, ...] = (), batch_size: int = 4, keep_pixels: int = 8) -> CalibrationResult:
    """One streaming pass over `images`: per-tensor and per-channel ranges of every quantized input,
    histograms for `method` (one per symmetry asked for), and the float outputs."""
    result = CalibrationResult(stats={})
    if method != "minmax":
        result.histograms = {(method, sym): histogram_collector(method, sym) for sym in symmetries}
    observe(model, images, preprocessor, result, batch_size, keep_pixels)
    return result


def observe(model: IJepaEncoder, images: list[Path], preprocessor: Preprocessor, result: CalibrationResult,
            batch_size: int = 4, keep_pixels: int = 0, histograms_only: bool = False,
            shifts: dict[str, np.ndarray] | None = None) -> None:
    """Run `images` through `model` with hooks that update `result` (stats, histograms, outputs).
    `shifts` are subtracted from those inputs first (fc2's, which the graph shifts explicitly)."""
    targets = hooked_inputs(model)
    handles = []

    def hook(name):
        def fn(_module, args):
            x = args[0].detach().float()
            if shifts and name in shifts:
                x = x - torch.from_numpy(shifts[name]).float()
            if not histograms_only:
                result.stats.setdefault(name, TensorStats()).update(x)
            if result.histograms:
                array = x.numpy().astype(np.float32, copy=False).reshape(-1)
                with contextlib.redirect_stdout(io.StringIO()):  # ORT's collector prints progress
                    for collector in result.histograms.values():
                        collector.collect({name: array})
        return fn

    for name, linear in targets.items():
        handles.append(linear.register_forward_pre_hook(hook(name)))
    try:
        batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        kept = 0
        outputs: dict[str, list[np.ndarray]] = {"embedding": [], "last_hidden_state": []}
        for batch in progress(batches, "calibrating"):
            pixels = preprocessor(batch)
            with torch.inference_mode():
                out = model(torch.from_numpy(pixels))
            if kept < keep_pixels:
                take = min(len(pixels), keep_pixels - kept)
                result.pixels.append(pixels[:take])
                outputs["embedding"].append(out.embedding[:take].numpy())
                outputs["last_hidden_state"].append(out.last_hidden_state[:take].numpy())
                kept += take
        if not histograms_only and kept:
            result.reference = {k: np.concatenate(v) for k, v in outputs.items()}
    finally:
        for handle in handles:
            handle.remove()


def ranges(result: CalibrationResult, method: str, symmetric: bool, migration=None) -> dict[str, tuple[float, float]]:
    """(lo, hi) per input tensor. `minmax` ranges after the outlier migration follow exactly from
    the per-channel ranges ((x - z) / s per channel); histograms were gathered after it."""
    out = {}
    if method == "minmax":
        for name, st in result.stats.items():
            if migration is None:
                out[name] = (st.lo, st.hi)
            else:
                z, s = migration.shift[name], migration.scale[name]
                out[name] = (float(((st.channel_lo - z) / s).min()), float(((st.channel_hi - z) / s).max()))
        return out
    collector = result.histograms[(method, symmetric)]
    with contextlib.redirect_stdout(io.StringIO()):
        thresholds = collector.compute_collection_result()
    for name, value in thresholds.items():  # (lo, hi, histogram, edges)
        out[name] = (float(value[0]), float(value[1]))
    return out
