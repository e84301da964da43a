"""`ExportContext`: what every step of one export shares (the model, the options, the work folder, the
held-out images and their references, the calibration; the artifacts built so far are the manifest's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ijepa_deploy.contract.manifest import Manifest
from ijepa_deploy.reference_model import LoadedCheckpoint
from ijepa_deploy.runtime.preprocessing import Preprocessor

from .calibration import CalibrationResult
from .gates import EvalSet
from .memory import WeightParking
from .migration import Migration
from .options import ExportOptions


@dataclass
class ExportContext:
    loaded: LoadedCheckpoint
    options: ExportOptions
    work: Path
    manifest: Manifest  # the manifest being built (artifacts added as they pass)
    preprocessor: Preprocessor
    size: tuple[int, int]
    calib_images: list[Path]
    eval_set: EvalSet | None
    parking: WeightParking
    calibration: CalibrationResult | None = None
    migration: Migration | None = None  # the outlier migration folded into the model, if any
    migration_check: dict | None = None  # its exactness check

    @property
    def model(self):
        return self.loaded.model

    def park_model(self) -> None:
        """Before a backend loads an artifact: the PyTorch weights leave the resident set."""
        self.parking.park(self.model)
