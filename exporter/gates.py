"""Gates: every artifact is run and compared with the PyTorch fp32 reference.

- fp32: random inputs at several batch sizes and resolutions (the graph must be exact), max abs
  and pooled cosine per case; on held-out images the same figures as below, for information.
- every lower precision: only held-out real images certify it (never random inputs): centered
  cosine (worst image), top-k neighbour agreement, token centered cosine, pooled cosine, max abs.
  Fewer than 16 images estimate the neighbour agreement weakly, and the record says so.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ijepa_deploy.reference_model import IJepaEncoder
from ijepa_deploy.runtime.backends.base import Backend
from ijepa_deploy.runtime.preprocessing import Preprocessor
from ijepa_deploy.runtime.similarity import compare, cosine_rows

from .errors import GateError
from .progress import progress

log = logging.getLogger(__name__)

RECOMMENDED_EVAL_IMAGES = 16
REFERENCE = "PyTorch reference model, float32, same weights"


@dataclass(frozen=True)
class Gate:
    """What an artifact must reach against the PyTorch fp32 reference (None: reported, not gated)."""

    min_cosine: float | None = None  # pooled embedding, per sample (fp32's shape checks)
    max_abs: float | None = None  # last_hidden_state (fp32's shape checks)
    min_centered_cosine: float | None = None  # worst held-out image, set mean removed
    min_topk_agreement: float | None = None  # neighbour agreement over the held-out set
    k: int = 5

    def failures(self, metrics: dict) -> list[str]:
        """Which bounds `metrics` (from runtime.similarity.compare or a shape check) misses."""
        out = []
        for key, bound, sense in (("pooled_cosine", self.min_cosine, ">="), ("max_abs", self.max_abs, "<="),
                                  ("centered_cosine", self.min_centered_cosine, ">="),
                                  (f"top{self.k}_agreement", self.min_topk_agreement, ">=")):
            if bound is None or key not in metrics:
                continue
            value = metrics[key]
            ok = value >= bound if sense == ">=" else value <= bound
            if not ok or value != value:  # NaN never passes
                out.append(f"{key} {value:.6g} (needs {sense} {bound:g})")
        return out

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


FP32_GATE = Gate(min_cosine=0.99999, max_abs=1e-4)
HALF_GATE = Gate(min_centered_cosine=0.999)
QUANT_GATE = Gate(min_centered_cosine=0.98, min_topk_agreement=0.9)


@dataclass
class Case:
    """One input batch the fp32 artifact is checked on."""

    pixel_values: np.ndarray  # (B, 3, H, W) float32
    inputs: str  # where the pixels came from: "random-uniform[-1,1]"

    @property
    def shape(self) -> tuple[int, int, int]:
        b, _, h, w = self.pixel_values.shape
        return b, h, w


def random_cases(shapes: list[tuple[int, int, int]], seed: int = 0) -> list[Case]:
    """Deterministic uniform inputs in [-1, 1] (the normalized pixel range) for each (batch, H, W)."""
    rng = np.random.default_rng(seed)
    return [Case(rng.uniform(-1, 1, (b, 3, h, w)).astype(np.float32), "random-uniform[-1,1]") for b, h, w in shapes]


@torch.inference_mode()
def reference_outputs(model: IJepaEncoder, pixels: np.ndarray) -> dict[str, np.ndarray]:
    out = model(torch.from_numpy(pixels))
    outputs = {"last_hidden_state": out.last_hidden_state.numpy(), "embedding": out.embedding.numpy()}
    if out.logits is not None:
        outputs["logits"] = out.logits.numpy()
    return outputs


@dataclass
class EvalSet:
    """Held-out images, preprocessed once, and the reference outputs on them (computed before any
    change to the model, such as SmoothQuant's folding)."""

    names: list[str]
    batches: list[np.ndarray]
    reference: dict[str, np.ndarray]

    @classmethod
    def build(cls, model: IJepaEncoder, paths: list[Path], preprocessor: Preprocessor, max_batch: int) -> "EvalSet":
        batches = [preprocessor(paths[i:i + max_batch]) for i in range(0, len(paths), max_batch)]
        outputs = [reference_outputs(model, b) for b in progress(batches, "reference outputs on held-out images")]
        reference = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
        return cls([p.name for p in paths], batches, reference)

    @property
    def weak(self) -> bool:
        return len(self.names) < RECOMMENDED_EVAL_IMAGES

    def describe(self) -> str:
        shown = ", ".join(self.names[:6]) + (", ..." if len(self.names) > 6 else "")
        return f"{len(self.names)} held-out images: {shown}"


def run_batches(backend: Backend, batches: list[np.ndarray], label: str) -> dict[str, np.ndarray]:
    names = [n for n in ("last_hidden_state", "embedding", "logits") if n in backend.output_names]
    outs = [backend.run(b, names) for b in progress(batches, f"running {label}")]
    return {n: np.concatenate([o[n] for o in outs]) for n in names}


def gate_images(outputs: dict[str, np.ndarray], eval_set: EvalSet, gate: Gate, label: str) -> dict:
    """The held-out-image record of `outputs`; `passed` says whether `gate` holds."""
    metrics = compare(outputs, eval_set.reference, gate.k)
    if "logits" in outputs:
        metrics["logits_max_abs"] = float(np.abs(outputs["logits"] - eval_set.reference["logits"]).max())
    failures = gate.failures(metrics)
    record = {"passed": not failures, "reference": REFERENCE, "gate": gate.to_dict(), "inputs": eval_set.describe(),
              "metrics": metrics, "weak_estimate": eval_set.weak}
    if failures:
        record["message"] = f"{label} failed its gate on {eval_set.describe()}: {'; '.join(failures)}"
    return record


def require(record: dict) -> dict:
    if not record["passed"]:
        raise GateError(record["message"])
    return record


def gate_shapes(backend: Backend, cases: list[Case], references: list[dict[str, np.ndarray]], gate: Gate,
                label: str) -> dict:
    """fp32: every case against its reference outputs, max abs and pooled cosine per case."""
    checks = []
    for case, ref in progress(list(zip(cases, references)), f"validating {label}"):
        got = backend.run(case.pixel_values)
        b, h, w = case.shape
        check = {"batch": b, "height": h, "width": w, "inputs": case.inputs,
                 "max_abs": float(np.abs(got["last_hidden_state"] - ref["last_hidden_state"]).max()),
                 "min_cosine": float(cosine_rows(got["embedding"], ref["embedding"]).min())}
        if "logits" in ref:
            check["logits_max_abs"] = float(np.abs(got["logits"] - ref["logits"]).max())
        check["passed"] = not gate.failures({"pooled_cosine": check["min_cosine"], "max_abs": check["max_abs"]})
        checks.append(check)
    record = {"passed": all(c["passed"] for c in checks), "reference": REFERENCE, "gate": gate.to_dict(),
              "checks": checks, "worst_cosine": min(c["min_cosine"] for c in checks),
              "worst_max_abs": max(c["max_abs"] for c in checks)}
    if not record["passed"]:
        bad = next(c for c in checks if not c["passed"])
        raise GateError(f"{label} failed its fp32 gate (cosine >= {gate.min_cosine}, max abs <= {gate.max_abs:g}) at "
                        f"batch {bad['batch']}, {bad['height']}x{bad['width']}: cosine {bad['min_cosine']:.6f}, "
                        f"max abs {bad['max_abs']:.3g}")
    return record


def summary(record: dict) -> str:
    m = record.get("metrics")
    if not m:
        return f"worst cosine {record['worst_cosine']:.7f}, worst max abs {record['worst_max_abs']:.2e}"
    weak = " (fewer than 16 images: neighbour agreement weakly estimated)" if record.get("weak_estimate") else ""
    agreement = next((f"{k} {v:.3f}" for k, v in m.items() if k.endswith("_agreement")), "")
    return (f"centered cosine {m['centered_cosine']:.5f}, {agreement}, token centered "
            f"{m.get('token_centered_cosine', float('nan')):.5f}, pooled {m['pooled_cosine']:.6f}, max abs "
            f"{m.get('max_abs', float('nan')):.2e} on {m['images']} held-out images{weak}")


def warn_if_weak(eval_set: EvalSet) -> None:
    if eval_set.weak:
        log.warning("  warning: only %d held-out images (16+ recommended): neighbour agreement is weakly "
                    "estimated; pass more with --eval-images", len(eval_set.names))
