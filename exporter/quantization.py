"""Quantized artifacts (int8, int8-cpu, fp8): calibrated Q/DQ, SmoothQuant, mixed precision, gates.

The recipe comes from the precision registry; the graph builder writes the Q/DQ itself (weights
stored quantized per output channel, one Q/DQ pair per activation tensor), so the quantized file
is streamed to disk like the fp32 one and needs no second copy of the model in memory.

1. Calibration (calibration.py) and SmoothQuant (smoothing.py) are shared by every quantized
   precision of one export.
2. Every weight MatMul is quantized and the artifact is gated on held-out images.
3. If the gate fails, a simulation in PyTorch (fake quantization with exactly the file's scales)
   measures each layer's quantization noise; the noisiest layers are kept in float (float32 in the
   Q/DQ base graph; with TensorRT's rule that fc1 is quantized only together with fc2), 1, 2, 4, 8,
   ... at a time, until the simulated calibration set and then the held-out gate pass, while at
   least `min_quantized_fraction` of the model's FLOPs stay quantized. Otherwise the export fails
   with a per-layer sensitivity table and leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ijepa_deploy.reference_model import IJepaEncoder
from ijepa_deploy.runtime.similarity import compare

from .calibration import _module, input_tensor, layer_names
from .errors import GateError
from .onnx_graph import FP8, FP8_MAX, INT8, UINT8, ActQuant, QuantPlan
from .precisions import Gate, QuantRecipe

SIM_MARGIN = 0.005  # the simulation must beat the gate by this much before a file is built


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


def layer_flops(model: IJepaEncoder, tokens: int) -> dict[str, float]:
    """FLOPs per image of every quantizable layer at `tokens` tokens."""
    return {name: 2.0 * tokens * m.in_features * m.out_features
            for name in layer_names(model) for m in [_module(model, name)]}


def with_fc_pairs(float_layers: set[str]) -> set[str]:
    """TensorRT's rule: fc1 is quantized only together with its fc2, so a float fc2 makes fc1 float."""
    return float_layers | {n.replace("mlp.fc2", "mlp.fc1") for n in float_layers if n.endswith("mlp.fc2")}


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

        def fn(module, args, output):
            x, bias = args[0], module.bias
            if z is not None:
                x, bias = x - z, bias + module.weight @ z
            y = F.linear(fake_quant(x, act), fake_quant_weight(module.weight, plan.weight_dtype), bias)
            centered = output - output.mean(dim=tuple(range(output.dim() - 1)), keepdim=True)
            noise_num[name] = noise_num.get(name, 0.0) + float(((y - output) ** 2).sum())
            noise_den[name] = noise_den.get(name, 0.0) + float((centered ** 2).sum())
            return y
        return fn

    for name, act in plan.activations.items():
        handles.append(_module(model, name).register_forward_hook(hook(name, act)))
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


def candidate_float_sets(order: list[str], flops: dict[str, float], total_flops: float, min_fraction: float,
                         fc_pair: bool):
    """Float-layer sets from the noisiest layers: 1, 2, 4, 8, ... of them, while enough stays quantized."""
    quantizable = sum(flops.values())
    k, seen = 1, set()
    while k <= len(order):
        chosen = set(order[:k])
        if fc_pair:
            chosen = with_fc_pairs(chosen)
        fraction = (quantizable - sum(flops[n] for n in chosen)) / total_flops
        if fraction < min_fraction:
            return
        key = frozenset(chosen)
        if key not in seen:
            seen.add(key)
            yield chosen, fraction
        k *= 2


def sensitivity_table(noise: dict[str, float], flops: dict[str, float], total: float, limit: int = 12) -> str:
    rows = sorted(noise.items(), key=lambda kv: -kv[1])[:limit]
    lines = ["layer | noise/signal | share of FLOPs"]
    lines += [f"{name} | {value:.3g} | {flops[name] / total:.1%}" for name, value in rows]
    return "; ".join(lines)


@dataclass
class Attempt:
    float_layers: list[str]
    quantized_fraction: float
    simulated: dict | None
    gate: dict | None
    passed: bool


def search(model: IJepaEncoder, recipe: QuantRecipe, acts: dict[str, ActQuant], gate: Gate,
           calib_pixels: list[np.ndarray], calib_reference: dict[str, np.ndarray], total_flops: float, tokens: int,
           build_and_gate, mixed_precision: bool = True, min_quantized_fraction: float = 0.5,
           shifts: dict[str, np.ndarray] | None = None) -> tuple[dict, list]:
    """Find the smallest float-layer set whose file passes `build_and_gate` (which returns the gate
    record and whether it passed). Returns (gate record, attempts); raises GateError with the table."""
    flops = layer_flops(model, tokens)
    quantizable = sum(flops.values())
    attempts: list[Attempt] = []
    record, passed = build_and_gate(plan_for(recipe, acts, set(), shifts))
    attempts.append(Attempt([], quantizable / total_flops, None, record["metrics"], passed))
    if passed:
        return record, attempts
    if not mixed_precision or not calib_pixels:
        raise GateError(record["message"] + ("" if mixed_precision else
                                             " (mixed precision is off: --mixed-precision keeps the worst layers "
                                             "in float)"))
    full = simulate(model, plan_for(recipe, acts, set(), shifts), calib_pixels, calib_reference, gate.k)
    order = sorted(full.noise, key=lambda n: -full.noise[n])
    candidates = list(candidate_float_sets(order, flops, total_flops, min_quantized_fraction, recipe.fc_pair))
    wanted = (gate.min_centered_cosine or 0.0) + SIM_MARGIN
    simulated: dict[frozenset, Simulation] = {}

    def sim_of(chosen: set[str]) -> Simulation:
        key = frozenset(chosen)
        if key not in simulated:
            simulated[key] = simulate(model, plan_for(recipe, acts, chosen, shifts), calib_pixels, calib_reference, gate.k)
        return simulated[key]

    if candidates:  # the most permissive mix first: if even it fails, no smaller one will pass
        chosen, fraction = candidates[-1]
        if sim_of(chosen).metrics["centered_cosine"] < wanted:
            attempts.append(Attempt(sorted(chosen), fraction, sim_of(chosen).metrics, None, False))
            candidates = []
    for chosen, fraction in candidates:
        sim = sim_of(chosen)
        if sim.metrics["centered_cosine"] < wanted:
            attempts.append(Attempt(sorted(chosen), fraction, sim.metrics, None, False))
            continue
        record, passed = build_and_gate(plan_for(recipe, acts, chosen, shifts))
        attempts.append(Attempt(sorted(chosen), fraction, sim.metrics, record["metrics"], passed))
        if passed:
            return record, attempts
    table = sensitivity_table(full.noise, flops, total_flops)
    best = max((a.simulated["centered_cosine"] for a in attempts if a.simulated), default=float("nan"))
    raise GateError(f"{record['message']}; no mix keeping >= {min_quantized_fraction:.0%} of the FLOPs quantized "
                    f"passes the gate ({len(attempts)} tried; best simulated centered cosine {best:.4f}). "
                    f"Per-layer sensitivity (simulated on "
                    f"{sum(len(p) for p in calib_pixels)} calibration images): {table}")


def remove_onnx(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".data").unlink(missing_ok=True)


def quantization_record(recipe: QuantRecipe, acts: dict[str, ActQuant], float_layers: list[str], fraction: float,
                        attempts: list[Attempt], smoothing_alpha: float | None, outlier_shift: bool) -> dict:
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

