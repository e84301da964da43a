"""Torch-free I-JEPA runtime: manifest-driven preprocessing, ONNX Runtime / OpenVINO / TensorRT backends.

    from ijepa_deploy.runtime import Embedder
    with Embedder.load("engines/vith14_1k", precision="int8-cpu") as embedder:
        vectors = embedder.embed(["a.jpg", "b.jpg"])      # (2, 1280) float32
        print(Embedder.similarity(vectors))
"""

from ijepa_deploy.contract.errors import (BackendError, CollectionError, ImageError, IntegrityError, ManifestError,
                                          OutputError, PixelLimitError, UsageError, UserError)
from ijepa_deploy.contract.manifest import SCHEMA_VERSION, Artifact, Engine, Manifest, Preprocessing
from ijepa_deploy.contract.shard_reader import read_embeddings

from .backends.base import Backend
from .config import EmbedConfig
from .embedder import Embedder, EmbedderClosedError
from .preprocessing import Preprocessor

__all__ = ["SCHEMA_VERSION", "Artifact", "Backend", "BackendError", "CollectionError", "EmbedConfig", "Embedder",
           "EmbedderClosedError", "Engine", "ImageError", "IntegrityError", "Manifest", "ManifestError", "OutputError",
           "PixelLimitError", "Preprocessing", "Preprocessor", "UsageError", "UserError", "read_embeddings"]
