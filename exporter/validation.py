"""Parity gates: every artifact is run under ONNX Runtime and compared with the PyTorch reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ijepa_deploy.reference_model import IJepaEncoder
from ijepa_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ijepa_deploy.runtime.embedder import cosine_rows

from .progress import progress


class GateError(RuntimeError):
    """An artifact missed its accuracy gate."""


@dataclass(frozen=True)
class Gate:
    min_cosine: float  # on the pooled embedding, per sample
    max_abs: float | None = None  # on last_hidden_state; None: reported, not gated


GATES = {
    "fp32": Gate(min_cosine=0.99999, max_abs=1e-4),
    "fp16": Gate(min_cosine=0.999),
    "int8": Gate(min_cosine=0.99),
}


@dataclass
class Case:
    """One input batch the artifact is checked on."""

    pixel_values: np.ndarray  # (B, 3, H, W) float32
    inputs: str  # where the pixels came from: "random-uniform", "images: a.png, b.png"

    @property
    def shape(self) -> tuple[int, int, int]:
        b, _, h, w = self.pixel_values.shape
        return b, h, w


def random_cases(shapes: list[tuple[int, int, int]], seed: int = 0) -> list[Case]:
    """Deterministic uniform inputs in [-1, 1] (the normalized pixel range) for each (batch, H, W)."""
    rng = np.random.default_rng(seed)
    return [Case(rng.uniform(-1, 1, (b, 3, h, w)).astype(np.float32), "random-uniform[-1,1]") for b, h, w in shapes]


class ReferenceOutputs:
    """PyTorch reference outputs per case, computed once and shared by every artifact's gate."""

    def __init__(self, model: IJepaEncoder):
        self.model = model
        # id -> (case, outputs): holding the case keeps its id from being reused by another object
        self._cache: dict[int, tuple[Case, dict[str, np.ndarray]]] = {}

    def __call__(self, case: Case) -> dict[str, np.ndarray]:
        key = id(case)
        if key not in self._cache:
            with torch.inference_mode():
                out = self.model(torch.from_numpy(case.pixel_values))
            outputs = {"last_hidden_state": out.last_hidden_state.numpy(), "embedding": out.embedding.numpy()}
            if out.logits is not None:
                outputs["logits"] = out.logits.numpy()
            self._cache[key] = (case, outputs)
        return self._cache[key][1]


def validate_onnx(onnx_path: Path, precision: str, cases: list[Case], reference: ReferenceOutputs,
                  gate: Gate | None = None, label: str | None = None) -> dict:
    """Run `onnx_path` on every case, compare with the reference, return the validation record.
    Raises GateError (with the numbers) when any case misses the gate."""
    gate = gate or GATES[precision]
    backend = OnnxRuntimeBackend(onnx_path)
    checks = []
    for case in progress(cases, f"validating {label or onnx_path.name}"):
        ref = reference(case)
        got = backend.run(case.pixel_values)
        b, h, w = case.shape
        check = {
            "batch": b, "height": h, "width": w, "inputs": case.inputs,
            "max_abs": float(np.abs(got["last_hidden_state"] - ref["last_hidden_state"]).max()),
            "min_cosine": float(cosine_rows(got["embedding"], ref["embedding"]).min()),
            "embedding_max_abs": float(np.abs(got["embedding"] - ref["embedding"]).max()),
        }
        if "logits" in ref:
            check["logits_max_abs"] = float(np.abs(got["logits"] - ref["logits"]).max())
            check["logits_min_cosine"] = float(cosine_rows(got["logits"], ref["logits"]).min())
        check["passed"] = check["min_cosine"] >= gate.min_cosine and (
            gate.max_abs is None or check["max_abs"] <= gate.max_abs)
        checks.append(check)
    del backend
    record = {
        "passed": all(c["passed"] for c in checks),
        "reference": "PyTorch reference model, float32",
        "gate": {"min_cosine": gate.min_cosine, "max_abs": gate.max_abs},
        "checks": checks,
        "worst_cosine": min(c["min_cosine"] for c in checks),
        "worst_max_abs": max(c["max_abs"] for c in checks),
    }
    if not record["passed"]:
        bad = [c for c in checks if not c["passed"]][0]
        limit = f", max abs <= {gate.max_abs:g}" if gate.max_abs is not None else ""
        raise GateError(
            f"{onnx_path.name} failed its {precision} gate (cosine >= {gate.min_cosine}{limit}) at batch {bad['batch']}, "
            f"{bad['height']}x{bad['width']}: cosine {bad['min_cosine']:.6f}, max abs {bad['max_abs']:.3g}")
    return record
