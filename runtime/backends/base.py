"""The backend seam: every backend takes a float32 NCHW batch and returns named float32 outputs."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class BackendError(RuntimeError):
    """A backend could not be created or run."""


class Backend(ABC):
    name: str
    output_names: list[str]

    @abstractmethod
    def run(self, pixel_values: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch (B, 3, H, W) float32; return the requested outputs by name."""

    def close(self) -> None:  # pragma: no cover - backends with device memory override
        pass
