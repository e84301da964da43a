"""Torch-free I-JEPA runtime: manifest-driven preprocessing, ONNX Runtime / TensorRT backends.

    from ijepa_deploy.runtime import Embedder
    with Embedder.load("engines/vith14_1k", precision="fp16") as embedder:
        vectors = embedder.embed(["a.jpg", "b.jpg"])      # (2, 1280) float32
        print(Embedder.similarity(vectors))
"""

from .backends.base import Backend, BackendError
from .embedder import Embedder
from .manifest import SCHEMA_VERSION, Manifest, ManifestError
from .preprocessing import ImageError, Preprocessor

__all__ = ["SCHEMA_VERSION", "Backend", "BackendError", "Embedder", "ImageError", "Manifest", "ManifestError",
           "Preprocessor"]
