"""`Embedder.info()`: what an embedder is, for a host process's logs and health endpoints: the runtime's,
backend's and engine's versions, provider and device, precision and arithmetic, the artifact's name and
identity (what every consumer of its vectors compares) and its preprocessing canon."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .embedder import Embedder

_DISTRIBUTIONS = ("ijepa-deploy", "numpy", "pillow", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt",
                  "tensorrt-cu12", "tensorrt-cu13", "cuda-python")


def package_versions() -> dict[str, str]:
    """Versions of the runtime's own packages that are installed (engines included)."""
    out = {"python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    out.setdefault("ijepa-deploy", "source")
    return out


def describe_embedder(embedder: "Embedder") -> dict:
    manifest, backend, config = embedder.manifest, embedder.backend, embedder.config
    pre = embedder.preprocessor.spec
    device = "cuda:%d" % config.device if backend.name == "tensorrt" else "cpu"
    providers = getattr(backend, "providers", None)
    if providers and any("CUDA" in p or "Tensorrt" in p for p in providers):
        device = "cuda"
    versions = package_versions()
    return {
        "runtime_version": versions["ijepa-deploy"],
        "artifact": manifest.name,
        "folder": str(manifest.folder) if manifest.folder else None,
        "precision": embedder.precision,
        "identity": embedder.identity,
        "backend": backend.name,
        "backend_detail": backend.describe(),
        "compute_precision": backend.compute_precision,
        "providers": list(providers) if providers else None,
        "device": device,
        "threads": config.threads,
        "workers": config.workers,
        "batch": {"min": manifest.batch.min, "opt": manifest.batch.opt, "max": manifest.batch.max},
        "resolution": list(embedder.resolution),
        "dim": embedder.dim,
        "preprocessing": {"canon": pre.canon, "resample": pre.resample, "mean": list(pre.mean), "std": list(pre.std),
                          "crop_pct": pre.crop_pct},
        "versions": versions,
        "engine_version": _engine_version(backend.name),
        "pid": os.getpid(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def _engine_version(name: str) -> str | None:
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}.get(name)
    mod = sys.modules.get(module) if module else None
    return getattr(mod, "__version__", None) if mod else None
