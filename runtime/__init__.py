"""Torch-free I-JEPA runtime: manifest-driven preprocessing, ONNX Runtime / OpenVINO / TensorRT backends.

    from ijepa_deploy.runtime import Embedder
    with Embedder.load("engines/vith14_1k", precision="int8-cpu") as embedder:
        vectors = embedder.embed(["a.jpg", "b.jpg"])      # (2, 1280) float32
        print(Embedder.similarity(vectors))
"""

from .backends.base import Backend
from .embedder import Embedder, EmbedderClosedError
from .errors import BackendError, ImageError, IntegrityError, ManifestError, OutputError, UsageError, UserError
from .manifest import SCHEMA_VERSION, Artifact, Engine, Manifest, Preprocessing
from .preprocessing import Preprocessor
from .shards import read_embeddings

__all__ = ["SCHEMA_VERSION", "Artifact", "Backend", "BackendError", "Embedder", "EmbedderClosedError", "Engine",
           "ImageError", "IntegrityError", "Manifest", "ManifestError", "OutputError", "Preprocessing",
           "Preprocessor", "UsageError", "UserError", "read_embeddings"]
