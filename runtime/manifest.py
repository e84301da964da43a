"""manifest.json: everything the runtime must know about an artifact folder.

Written by the exporter, read by the runtime; the runtime never guesses a value that is not here.
The JSON Schema beside this file (`manifest.schema.json`) is the contract; `SCHEMA_VERSION` is
bumped on any incompatible change and the runtime refuses manifests newer than it understands.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


class ManifestError(ValueError):
    """An artifact folder or its manifest is missing, unreadable or incompatible."""


@dataclass
class Manifest:
    name: str
    architecture: dict
    checkpoint: dict
    preprocessing: dict  # height, width, resample, rescale_factor, mean, std, channel_order, layout
    io: dict  # inputs / outputs: name, dtype, shape (str = dynamic axis)
    batch: dict  # min, opt, max
    resolution: dict  # dynamic, native, min, max, multiple_of
    artifacts: dict = field(default_factory=dict)  # precision -> {file, data_file, precision, sha256, bytes, validation}
    engines: dict = field(default_factory=dict)  # precision -> engine entry, or {"skipped": reason}
    labels: dict | None = None  # class index (as str) -> label
    pooling: str = "mean"
    variant: str | None = None
    encoder: str | None = None  # context / target for original checkpoints
    tools: dict = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def dynamic_resolution(self) -> bool:
        return bool(self.resolution.get("dynamic"))

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.io["outputs"]]

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Manifest":
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not folder.is_dir():
            raise ManifestError(f"artifacts folder not found: {folder}; export one with `ijepa-export --variant NAME`")
        if not path.is_file():
            raise ManifestError(f"{folder} has no {MANIFEST_NAME}: it is not an ijepa-export artifacts folder "
                                "(re-run `ijepa-export`, which writes it)")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path} is not valid JSON ({exc})") from None
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise ManifestError(f"{path} has no integer schema_version")
        if version > SCHEMA_VERSION:
            raise ManifestError(f"{path} uses manifest schema {version}, newer than this runtime's {SCHEMA_VERSION}: "
                                "upgrade ijepa-deploy")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ManifestError(f"{path} is missing required fields ({exc})") from None

    def artifact(self, precision: str) -> dict:
        if precision not in self.artifacts:
            have = ", ".join(sorted(self.artifacts)) or "none"
            raise ManifestError(f"precision {precision!r} was not exported to {self.name} (available: {have}); "
                                f"re-export with --precision {precision}")
        return self.artifacts[precision]
