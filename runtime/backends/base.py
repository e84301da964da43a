"""The backend seam: every backend takes a float32 NCHW batch and returns named float32 outputs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from ijepa_deploy.contract.errors import BackendError

if TYPE_CHECKING:
    from ijepa_deploy.contract.manifest import Manifest

__all__ = ["Backend", "BackendError", "check_io"]


class Backend(ABC):
    name: str
    input_name: str
    output_names: list[str]
    output_shapes: dict[str, tuple] = {}  # name -> dims (None where dynamic), as the file declares them
    # what the arithmetic is: "file" (the types the file declares) or a lower inference precision ("bf16")
    compute_precision: str = "file"

    @abstractmethod
    def run(self, pixel_values: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch (B, 3, H, W) float32; return the requested outputs by name."""

    def close(self) -> None:  # backends holding device memory or worker threads override this
        pass

    def warmup(self, shapes: list[tuple[int, ...]] | None = None) -> int:
        """Run what the first calls would otherwise pay for (TensorRT: every profile, CUDA graphs captured);
        returns how many runs it made. CPU backends compile lazily and need none."""
        return 0

    def describe(self) -> str:
        return self.name


def check_io(backend: Backend, manifest: "Manifest", file: str) -> None:
    """The file's inputs and outputs must be the manifest's: another model swapped in is refused."""
    want_in, want_out = manifest.input_name, manifest.output_names
    if backend.input_name != want_in or sorted(backend.output_names) != sorted(want_out):
        raise BackendError(f"{file} has inputs [{backend.input_name}] and outputs {backend.output_names}, but the "
                           f"manifest says [{want_in}] and {want_out}: the file does not belong to this artifact "
                           "folder; re-export")
    for spec in manifest.io.outputs:
        got = backend.output_shapes.get(spec.name)
        if got is None or len(got) != len(spec.shape):
            continue
        for have, want in zip(got, spec.shape):
            if isinstance(want, int) and have is not None and have != want:
                raise BackendError(f"{file}'s output {spec.name} has shape {list(got)}, the manifest says "
                                   f"{list(spec.shape)}: the file does not belong to this artifact folder; re-export")
