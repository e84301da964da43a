"""Memory of a long export: PyTorch weights leave the resident set while a backend gates an artifact.

The gates never touch the PyTorch weights, so before ONNX Runtime or OpenVINO loads an artifact they
are moved to a file-backed mapping (ViT-H: 2.5 GB leave the resident set) and page back in when the
next PyTorch step reads them; freed heap is handed back to the OS so backends do not stack up.
"""

from __future__ import annotations

import ctypes
import gc
import os
import tempfile
from pathlib import Path

PARK_ABOVE = 256 << 20  # models larger than this leave memory while a backend gates an artifact
PARKED_PREFIX = ".reference-weights."


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS: glibc keeps the arenas of a freed
    ONNX Runtime session or PyTorch tensors, which the next backend would stack on."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class WeightParking:
    """Parks one PyTorch model's weights in a file under `folder` (the export's work folder)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.file: Path | None = None  # the file the weights are mapped from, while unchanged

    def park(self, model) -> None:
        if sum(p.numel() * p.element_size() for p in model.parameters()) < PARK_ABOVE:
            return
        import torch

        if self.file is None:  # first park, or the weights changed since (the outlier migration)
            fd, name = tempfile.mkstemp(prefix=PARKED_PREFIX, suffix=".pt", dir=self.folder)
            os.close(fd)
            self.file = Path(name)
            torch.save({k: v.detach() for k, v in model.state_dict().items()}, self.file)
        # fresh mappings have no resident pages; never rewrite a file that is mapped (SIGBUS)
        mapped = torch.load(self.file, mmap=True, weights_only=True)
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            tensor.data = mapped[name]
        release_memory()

    def weights_changed(self) -> None:
        """The next park writes a new file; the old one is unlinked (mappings keep it readable)."""
        if self.file is not None:
            self.file.unlink(missing_ok=True)
            self.file = None

    def clear(self) -> None:
        """Remove every parking file (before the work folder becomes the artifact folder)."""
        for parked in self.folder.glob(PARKED_PREFIX + "*"):
            parked.unlink()
        self.file = None
