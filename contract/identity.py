"""One artifact identity: a fingerprint of everything that determines the vectors an artifact gives.

sha256 over a canonical JSON of: the sha256 of every file of the artifact (external data included),
the precision and its runtime mode (bf16 runs the fp32 file with another inference precision), the
preprocessing and the resolution range. Two checkpoints of one architecture (same `.onnx` bytes,
different `.onnx.data`) get different identities; the same files exported twice get the same one.
Resume, `read_embeddings`, `ijepa-index query`, the Ray path and the server compare it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING

from .records import dump_record

if TYPE_CHECKING:
    from .manifest import Artifact, Manifest

IDENTITY_FORMAT = 1


def artifact_identity(manifest: "Manifest", artifact: "Artifact") -> str:
    """`sha256:<hex>` of what determines `artifact`'s vectors (see the module doc)."""
    payload = {
        "format": IDENTITY_FORMAT,
        "precision": artifact.precision,
        "files": [f.sha256 for f in artifact.files],
        "inference_precision": artifact.inference_precision,
        "preprocessing": dump_record(manifest.preprocessing),
        "resolution": dump_record(manifest.resolution),
        "pooling": manifest.pooling,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def with_identity(manifest: "Manifest", artifact: "Artifact") -> "Artifact":
    """`artifact` with its identity filled in (the exporter's last step per artifact)."""
    return dataclasses.replace(artifact, identity=artifact_identity(manifest, artifact))


def short(identity: str) -> str:
    """A readable prefix for messages: sha256:1a2b3c4d5e6f."""
    return identity[:19]
