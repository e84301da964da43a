"""Quantization arithmetic: activation parameters from calibrated ranges, fake quantization exactly
as ONNX's QuantizeLinear/DequantizeLinear compute it, the simulation of a quantization plan in
PyTorch (per-layer noise and the gate's figures), and the manifest's quantization record.

The graph builder writes the Q/DQ itself (weights stored quantized per output channel, one Q/DQ pair
per activation tensor); the simulation applies the same rule with float32 scales and a float32 float
region (the int8 and fp8 files store float16 scales, within 5e-4 relative, and run their float region
in float16), so it ranks layers by nearly the noise the file will have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ijepa_deploy.reference_model import IJepaEncoder
from ijepa_deploy.runtime.similarity import compare

from .layers import module
from .onnx_graph import FP8, FP8_MAX, INT8, UINT8, ActQuant, QuantPlan
from .precisions import QuantRecipe


def act_quant(lo: float, hi: float, activation: str) -> ActQuant:
    """Per-tensor activation parameters for a calibrated range."""
    if activation == "uint8":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = max(hi - lo, 1e-8) / 255.0
        return ActQuant(float(np.float32(scale)), float(np.clip(np.rint(-lo / scale), 0, 255)), UINT8)
    amax = max(abs(lo), abs(hi), 1e-8)
    if activation == "fp8e4m3":
        return ActQuant(float(np.float32(amax / FP8_MAX)), 0.0, FP8)
    return ActQuant(float(np.float32(amax / 127.0)), 0.0, INT8)


def fake_quant(x: torch.Tensor, q: ActQuant) -> torch.Tensor:
    """QuantizeLinear -> DequantizeLinear, as ONNX defines them (round half to even, saturate)."""
    if q.dtype == FP8:
        return (x / q.scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * q.scale
    lo, hi = (-128, 127) if q.dtype == INT8 else (0, 255)
    return ((torch.round(x / q.scale) + q.zero_point).clamp(lo, hi) - q.zero_point) * q.scale


def fake_quant_weight(w: torch.Tensor, dtype: int) -> torch.Tensor:
    """Per-output-channel symmetric weight quantization of a torch [out, in] weight."""
    amax = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    if dtype == FP8:
        scale = amax / FP8_MAX
        return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale
    scale = amax / 127.0
    return torch.round(w / scale).clamp(-127, 127) * scale


@dataclass
class Simulation:
    metrics: dict
    noise: dict[str, float]  # per layer: quantization noise energy / centered signal energy of its output


@torch.no_grad()
def simulate(model: IJepaEncoder, plan: QuantPlan, pixels: list[np.ndarray], reference: dict[str, np.ndarray],
             k: int = 5) -> Simulation:
    """Run `model` with every layer in `plan` fake-quantized; compare with the float `reference`."""
    noise_num: dict[str, float] = {}
    noise_den: dict[str, float] = {}
    handles = []

    def hook(name, act):
        shift = plan.input_shifts.get(name)
        z = torch.from_numpy(shift).float() if shift is not None else None

        def fn(linear, args, output):
            x, bias = args[0], linear.bias
            if z is not None:
                x, bias = x - z, bias + linear.weight @ z
            y = F.linear(fake_quant(x, act), fake_quant_weight(linear.weight, plan.weight_dtype), bias)
            centered = output - output.mean(dim=tuple(range(output.dim() - 1)), keepdim=True)
            noise_num[name] = noise_num.get(name, 0.0) + float(((y - output) ** 2).sum())
            noise_den[name] = noise_den.get(name, 0.0) + float((centered ** 2).sum())
            return y
        return fn

    for name, act in plan.activations.items():
        handles.append(module(model, name).register_forward_hook(hook(name, act)))
    try:
        outs = [model(torch.from_numpy(p)) for p in pixels]
    finally:
        for handle in handles:
            handle.remove()
    got = {"embedding": torch.cat([o.embedding for o in outs]).numpy(),
           "last_hidden_state": torch.cat([o.last_hidden_state for o in outs]).numpy()}
    noise = {n: noise_num[n] / max(noise_den[n], 1e-30) for n in noise_num}
    return Simulation(compare(got, reference, k), noise)


def plan_for(recipe: QuantRecipe, acts: dict[str, ActQuant], float_layers: set[str],
             shifts: dict[str, np.ndarray] | None = None) -> QuantPlan:
    weight = FP8 if recipe.weight == "fp8e4m3" else INT8
    quantized = {n: a for n, a in acts.items() if n not in float_layers}
    return QuantPlan(weight, quantized, {n: z for n, z in (shifts or {}).items() if n in quantized})


def remove_onnx(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".data").unlink(missing_ok=True)


def quantization_record(recipe: QuantRecipe, acts: dict[str, ActQuant], float_layers: list[str], fraction: float,
                        attempts: list, smoothing_alpha: float | None, outlier_shift: bool) -> dict:
    return {
        "activations": {"int8": "int8 symmetric per tensor", "uint8": "uint8 asymmetric per tensor",
                        "fp8e4m3": "float8 E4M3 symmetric per tensor"}[recipe.activation],
        "weights": f"{'float8 E4M3' if recipe.weight == 'fp8e4m3' else 'int8'} symmetric, per output channel",
        "target": recipe.target,
        "smoothquant_alpha": smoothing_alpha,
        "outlier_shift": outlier_shift,
        "quantized_layers": len(acts) - len(float_layers),
        "float_layers": float_layers,
        "quantized_flop_fraction": round(fraction, 4),
        "attempts": [{"float_layers": len(a.float_layers), "quantized_flop_fraction": round(a.quantized_fraction, 4),
                      "simulated_centered_cosine": a.simulated and round(a.simulated["centered_cosine"], 6),
                      "held_out": a.gate and {k: round(v, 6) if isinstance(v, float) else v for k, v in a.gate.items()},
                      "passed": a.passed} for a in attempts],
    }

