"""Mixed precision: the fewest MatMuls kept in float for a quantized artifact to pass its gate.

The shape of NNCF's accuracy control: the search proposes quantization plans and an `Evaluator`
judges them, by simulation (cheap, on the calibration images) and by building and gating the real
file (on the held-out images). Every weight MatMul is tried quantized first; if that misses the
gate, the simulation ranks layers by their quantization noise and the noisiest are kept in float,
1, 2, 4, 8, ... at a time (with TensorRT's rule that fc1 is quantized only with its fc2), until the
simulation and then the file pass, while at least `min_quantized_fraction` of the FLOPs stay
quantized. Otherwise: a GateError with the per-layer sensitivity table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import GateError
from .gates import Gate
from .layers import with_fc_pairs
from .onnx_graph import ActQuant, QuantPlan
from .precisions import QuantRecipe
from .quantization import Simulation, plan_for

SIM_MARGIN = 0.005  # the simulation must beat the gate by this much before a file is built


class Evaluator(Protocol):
    def evaluate(self, plan: QuantPlan) -> dict:
        """Build the file for `plan` and gate it: the gate record (`passed`, `metrics`, `message`)."""

    def simulate(self, plan: QuantPlan) -> Simulation:
        """The plan fake-quantized in PyTorch on the calibration images."""


@dataclass
class SearchSpace:
    recipe: QuantRecipe
    acts: dict[str, ActQuant]  # every quantizable layer's activation parameters
    flops: dict[str, float]  # per layer, per image
    total_flops: float  # of the whole model, per image
    shifts: dict[str, np.ndarray] = field(default_factory=dict)  # explicit input shifts (fc2)
    min_quantized_fraction: float = 0.5

    def plan(self, float_layers: set[str]) -> QuantPlan:
        return plan_for(self.recipe, self.acts, float_layers, self.shifts)

    def fraction(self, float_layers: set[str]) -> float:
        return (sum(self.flops.values()) - sum(self.flops[n] for n in float_layers)) / self.total_flops


@dataclass
class Attempt:
    float_layers: list[str]
    quantized_fraction: float
    simulated: dict | None
    gate: dict | None
    passed: bool


def candidate_float_sets(order: list[str], space: SearchSpace):
    """Float-layer sets from the noisiest layers: 1, 2, 4, 8, ... of them, while enough stays quantized."""
    k, seen = 1, set()
    while k <= len(order):
        chosen = set(order[:k])
        if space.recipe.tensorrt_rules:
            chosen = with_fc_pairs(chosen)
        fraction = space.fraction(chosen)
        if fraction < space.min_quantized_fraction:
            return
        if frozenset(chosen) not in seen:
            seen.add(frozenset(chosen))
            yield chosen, fraction
        k *= 2


def sensitivity_table(noise: dict[str, float], flops: dict[str, float], total: float, limit: int = 12) -> str:
    rows = sorted(noise.items(), key=lambda kv: -kv[1])[:limit]
    lines = ["layer | noise/signal | share of FLOPs"]
    lines += [f"{name} | {value:.3g} | {flops[name] / total:.1%}" for name, value in rows]
    return "; ".join(lines)


def search(space: SearchSpace, gate: Gate, evaluator: Evaluator, mixed_precision: bool = True,
           can_simulate: bool = True) -> tuple[dict, list[Attempt]]:
    """The gate record of the first plan that passes, and every attempt; raises GateError with the table."""
    attempts: list[Attempt] = []
    record = evaluator.evaluate(space.plan(set()))
    attempts.append(Attempt([], space.fraction(set()), None, record["metrics"], record["passed"]))
    if record["passed"]:
        return record, attempts
    if not mixed_precision or not can_simulate:
        raise GateError(record["message"] + ("" if mixed_precision else
                                             " (mixed precision is off: --mixed-precision keeps the worst layers "
                                             "in float)"))
    full = evaluator.simulate(space.plan(set()))
    order = sorted(full.noise, key=lambda n: -full.noise[n])
    candidates = list(candidate_float_sets(order, space))
    wanted = (gate.min_centered_cosine or 0.0) + SIM_MARGIN
    simulated: dict[frozenset, Simulation] = {}

    def sim_of(chosen: set[str]) -> Simulation:
        if frozenset(chosen) not in simulated:
            simulated[frozenset(chosen)] = evaluator.simulate(space.plan(chosen))
        return simulated[frozenset(chosen)]

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
        record = evaluator.evaluate(space.plan(chosen))
        attempts.append(Attempt(sorted(chosen), fraction, sim.metrics, record["metrics"], record["passed"]))
        if record["passed"]:
            return record, attempts
    best = max((a.simulated["centered_cosine"] for a in attempts if a.simulated), default=float("nan"))
    raise GateError(f"{record['message']}; no mix keeping >= {space.min_quantized_fraction:.0%} of the FLOPs "
                    f"quantized passes the gate ({len(attempts)} tried; best simulated centered cosine {best:.4f}). "
                    f"Per-layer sensitivity (simulated on the calibration images): "
                    f"{sensitivity_table(full.noise, space.flops, space.total_flops)}")
