"""`ijepa-embed --output x.npy`: one `.npy` of embeddings and its JSON sidecar, replaced as one unit.

The sidecar names the inputs in row order, the skipped ones, the artifact identity, precision and
backend, and the `.npy`'s sha256; the previous good pair survives any failed write, and a missing or
read-only folder is refused before any work.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ijepa_deploy.contract.atomic import check_writable, replace_together
from ijepa_deploy.contract.errors import UsageError
from ijepa_deploy.runtime.embed_inputs import Embedded, embed_inputs
from ijepa_deploy.runtime.embedder import Embedder


def output_paths(output: str | Path) -> tuple[Path, Path]:
    """The exact `.npy` path the user gave (`.npy` appended only when the name has no suffix) and
    its sidecar (`x.npy` -> `x.json`, any other name -> `name.json` appended)."""
    path = Path(output)
    if str(output).endswith("/") or path.name in ("", ".", ".."):
        raise UsageError(f"--output {str(output)!r} is not a file name")
    if not path.suffix:
        path = path.with_name(path.name + ".npy")
    sidecar = path.with_suffix(".json") if path.suffix == ".npy" else path.with_name(path.name + ".json")
    return path, sidecar


def check_outputs(output: str | Path) -> tuple[Path, Path]:
    npy, sidecar = output_paths(output)
    check_writable(npy)
    check_writable(sidecar)
    return npy, sidecar


def write_embeddings(npy: Path, sidecar: Path, vectors: np.ndarray, record: dict) -> None:
    """The `.npy` and its JSON sidecar as one unit (the sidecar records the `.npy`'s sha256)."""
    buffer = io.BytesIO()
    np.save(buffer, vectors, allow_pickle=False)
    data = buffer.getvalue()
    record = {**record, "npy": npy.name, "sha256": hashlib.sha256(data).hexdigest(),
              "shape": list(vectors.shape), "dtype": str(vectors.dtype)}
    text = json.dumps(record, indent=2) + "\n"
    replace_together({npy: lambda fh: fh.write(data), sidecar: lambda fh: fh.write(text.encode())})


def save_embedded(embedder: Embedder, result: Embedded, output: str | Path) -> tuple[Path, Path]:
    npy, sidecar = output_paths(output)
    write_embeddings(npy, sidecar, result.vectors, {
        "inputs": result.names, "skipped": [list(s) for s in result.skipped],
        "artifacts": str(embedder.manifest.folder), "name": embedder.manifest.name, "precision": embedder.precision,
        "identity": embedder.identity, "compute_precision": embedder.backend.compute_precision,
        "resolution": list(embedder.resolution), "backend": embedder.backend.describe(),
        "dim": int(result.vectors.shape[1])})
    return npy, sidecar


def embed_to_file(embedder: Embedder, images: Iterable, output: str | Path, *, skip_bad: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> Embedded:
    """Embed `images` with `embedder` and write `output` (.npy) and its sidecar; refuses an unwritable
    output before any work."""
    check_outputs(output)
    result = embed_inputs(embedder, images, skip_bad=skip_bad, progress=progress)
    save_embedded(embedder, result, output)
    return result
