"""manifest.json: the typed, validated contract between the exporter and everything that reads artifacts.

The exporter writes it; the runtime, the TensorRT build, the Triton writer, collections and the
benchmark read nothing else. On load the JSON is checked against `manifest.schema.json` (the error
names the field and the file), parsed once into the frozen records below, and checked for
consistency (ranges in order, file names plain names inside the folder, each artifact's identity
the one its files give). `Manifest.verify(precision)` checks the sha256 of every file an artifact
uses before it is opened. `SCHEMA_VERSION` is bumped on any incompatible change.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from .architecture import Architecture
from .atomic import write_atomic
from .consistency import check_consistency
from .errors import ManifestError
from .integrity import confined, sha256_file, verify_file
from .naming import MANIFEST_NAME
from .records import dump_record, load_record

SCHEMA_VERSION = 3
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
MAX_MANIFEST_BYTES = 16 << 20


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def check_schema(data: object, where: str, subschema: str | None = None) -> None:
    """Validate `data` against the manifest schema (or one of its $defs); one line naming the field."""
    validator = _validator()
    if subschema:
        validator = validator.evolve(schema={"$ref": f"#/$defs/{subschema}", "$defs": validator.schema["$defs"]})
    error = next(iter(sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        message = error.message if len(error.message) < 200 else error.message[:200] + "..."
        raise ManifestError(f"{where}: field {at or '(top level)'}: {message}")


@dataclass(frozen=True)
class Preprocessing:
    """How pixels are prepared: decode, orient, RGB, resize, rescale, normalize, NCHW.

    `crop_pct` None resizes straight to height x width (Hugging Face's ViTImageProcessor); a value
    resizes the shorter side to floor(size / crop_pct) keeping the aspect ratio and center-crops
    height x width (timm's eval transform). `canon` names which of the two a checkpoint was trained with.
    """

    height: int
    width: int
    resample: str = "bilinear"
    rescale_factor: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    exif_orientation: bool = True  # apply the EXIF orientation tag, as transformers' load_image does
    max_pixels: int = 100_000_000  # images with more pixels are refused before decoding
    crop_pct: float | None = None
    canon: str = "hf"  # "hf" (mean = std = 0.5, squash), "imagenet" (ImageNet mean/std, crop), "custom"

    @classmethod
    def from_dict(cls, data: dict, where: str = "preprocessing") -> "Preprocessing":
        check_schema(data, where, "preprocessing")
        return load_record(cls, data)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple  # ints, or names of dynamic axes


@dataclass(frozen=True)
class IOSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class BatchRange:
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class ResolutionRange:
    dynamic: bool
    native: tuple[int, int]
    min: tuple[int, int]
    max: tuple[int, int]
    multiple_of: int


@dataclass(frozen=True)
class CheckpointRecord:
    kind: str  # random-init, huggingface-dir, huggingface-hub, safetensors, original-ijepa
    sha256: str | None
    location: str | None = None
    variant: str | None = None
    seed: int | None = None
    encoder: str | None = None
    network_key: str | None = None
    files: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FileRecord:
    path: str
    sha256: str
    bytes: int

    @classmethod
    def of(cls, path: Path, name: str | None = None) -> "FileRecord":
        """The record of a file as it is on disk, under `name` (default: its own name)."""
        return cls(name or path.name, sha256_file(path), path.stat().st_size)


@dataclass(frozen=True)
class Validation:
    """What a gate measured and whether it held (figures by name: see runtime.similarity.compare)."""

    passed: bool
    reference: str
    gate: Mapping[str, float]
    metrics: Mapping[str, float] | None = None
    inputs: str | None = None
    weak_estimate: bool | None = None
    checks: tuple[Mapping, ...] | None = None  # fp32: one per batch size and resolution
    worst_cosine: float | None = None
    worst_max_abs: float | None = None
    matmul_dtypes: Mapping[str, int] | None = None
    openvino_bf16: Mapping | None = None  # a quantized file gated again with OpenVINO's bf16 float ops
    backend: str | None = None


@dataclass(frozen=True)
class CalibrationRecord:
    method: str
    count: int
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuantizationRecord:
    activations: str
    weights: str
    target: str
    smoothquant_alpha: float | None
    outlier_shift: bool
    quantized_layers: int
    float_layers: tuple[str, ...]
    quantized_flop_fraction: float
    attempts: tuple[Mapping, ...] = ()
    migration_check: Mapping | None = None


@dataclass(frozen=True)
class Artifact:
    """One ONNX artifact (or a runtime mode of one, such as bf16 over the fp32 file)."""

    precision: str
    file: str
    files: tuple[FileRecord, ...]
    bytes: int
    opset: int
    validation: Validation
    tensorrt: bool  # TensorRT can build a plan from this file
    cpu_only: bool
    identity: str = ""  # contract.identity.artifact_identity: what every consumer of vectors compares
    data_file: str | None = None
    min_compute_capability: str | None = None
    mode_of: str | None = None  # "fp32" for bf16: the same file run with another inference precision
    inference_precision: str | None = None
    openvino_precision: str | None = None  # OpenVINO may run the float ops in bf16 (gated at export); else f32
    backends: tuple[str, ...] | None = None  # backends that can run it (None: any)
    calibration: CalibrationRecord | None = None
    quantization: QuantizationRecord | None = None
    description: str = ""


@dataclass(frozen=True)
class Engine:
    """A TensorRT plan built on one GPU with one TensorRT version."""

    precision: str
    file: str
    sha256: str
    bytes: int
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profiles: tuple[Mapping, ...]
    version_compatible: bool = False
    hardware_compatibility: str | None = None  # "ampere_plus", read from the plan itself
    cpu_arch: str | None = None  # "x86_64" / "aarch64": plans do not cross CPU architectures
    stripped: bool = False  # weight-stripped: refitted from the artifact's ONNX when loaded
    precision_report: dict | None = None  # what the engine inspector says every GEMM runs in, attention fusion
    build_seconds: float | None = None
    optimization_level: int | None = None
    tf32: bool | None = None
    timing_cache: str | None = None
    attention_kernels: tuple[str, ...] | None = None
    layers: int | None = None
    inspection_error: str | None = None
    validation: Validation | None = None


@dataclass(frozen=True)
class GateInputs:
    """Held-out pixels stored with the artifacts, for gating TensorRT plans on the target GPU."""

    path: str
    sha256: str
    bytes: int
    images: int


@dataclass(frozen=True)
class Manifest:
    name: str
    architecture: Architecture
    checkpoint: CheckpointRecord
    preprocessing: Preprocessing
    io: IOSpec
    batch: BatchRange
    resolution: ResolutionRange
    artifacts: Mapping[str, Artifact] = field(default_factory=dict)
    engines: tuple[Engine, ...] = ()
    labels: Mapping[str, str] | None = None  # class index (as str) -> label
    gate_inputs: GateInputs | None = None
    pooling: str = "mean"
    variant: str | None = None
    encoder: str | None = None  # context / target for original checkpoints
    tools: Mapping[str, str] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION
    folder: Path | None = field(default=None, compare=False, repr=False, metadata={"json": False})

    # ---------------------------------------------------------------- derived facts

    @property
    def dynamic_resolution(self) -> bool:
        return self.resolution.dynamic

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.io.outputs]

    @property
    def input_name(self) -> str:
        return self.io.inputs[0].name

    @property
    def hidden_size(self) -> int:
        return self.architecture.hidden_size

    def artifact(self, precision: str) -> Artifact:
        if precision not in self.artifacts:
            have = ", ".join(sorted(self.artifacts)) or "none"
            raise ManifestError(f"precision {precision!r} was not exported to {self.name} (available: {have}); "
                                f"re-export with --precision {precision}")
        return self.artifacts[precision]

    def engines_for(self, precision: str) -> list[Engine]:
        return [e for e in self.engines if e.precision == precision]

    def with_engine(self, engine: Engine) -> "Manifest":
        """This manifest with `engine` recorded, replacing the one of the same file (its name says precision, GPU,
        TensorRT version and weight stripping)."""
        kept = tuple(e for e in self.engines if e.file != engine.file)
        return dataclasses.replace(self, engines=kept + (engine,))

    # ---------------------------------------------------------------- files

    def path(self, name: str, what: str = "file") -> Path:
        """A file of this folder, confined to it."""
        if self.folder is None:
            raise ManifestError(f"manifest {self.name} was not loaded from a folder")
        return confined(self.folder, name, what)

    def verify(self, precision: str) -> Path:
        """Check every file of `precision`'s artifact against its sha256; return the ONNX path."""
        art = self.artifact(precision)
        for record in art.files:
            verify_file(self.path(record.path), record.sha256, record.bytes)
        return self.path(art.file)

    def verify_engine(self, engine: Engine) -> Path:
        path = self.path(engine.file, "engine")
        verify_file(path, engine.sha256, engine.bytes)
        return path

    def referenced_files(self) -> list[str]:
        names = [r.path for a in self.artifacts.values() for r in a.files]
        names += [n for a in self.artifacts.values() for n in (a.file, a.data_file) if n]
        names += [self.gate_inputs.path] if self.gate_inputs else []
        return names + [e.file for e in self.engines]

    # ---------------------------------------------------------------- (de)serialization

    def to_dict(self) -> dict:
        return dump_record(self)

    def save(self, folder: Path) -> Path:
        data = self.to_dict()
        check_schema(data, f"manifest for {folder}")  # never write what the runtime would refuse
        return write_atomic(Path(folder) / MANIFEST_NAME, json.dumps(data, indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: object, where: str = MANIFEST_NAME, folder: Path | None = None) -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError(f"{where} is not a JSON object")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ManifestError(f"{where} has no integer schema_version")
        if version > SCHEMA_VERSION:
            raise ManifestError(f"{where} uses manifest schema {version}, newer than this runtime's {SCHEMA_VERSION}: "
                                "upgrade ijepa-deploy")
        if version < SCHEMA_VERSION:
            raise ManifestError(f"{where} uses manifest schema {version}, written by an older ijepa-export (its "
                                "artifacts carry no identity, and schema 1's low-precision gates are no longer "
                                "trusted): re-export the artifacts")
        check_schema(data, where)
        try:
            manifest = dataclasses.replace(load_record(cls, data), folder=folder)
        except (TypeError, ValueError, AttributeError) as exc:  # e.g. an architecture whose numbers do not fit
            raise ManifestError(f"{where}: {str(exc)[:200]}") from None
        check_consistency(manifest, where)
        return manifest

    @classmethod
    def load(cls, folder: str | Path) -> "Manifest":
        """Read and validate `folder/manifest.json` (files are verified later, per artifact)."""
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not folder.is_dir():
            raise ManifestError(f"artifacts folder not found: {folder}; export one with `ijepa-export --variant NAME`")
        if not path.is_file():
            raise ManifestError(f"{folder} has no {MANIFEST_NAME}: it is not an ijepa-export artifacts folder "
                                "(re-run `ijepa-export`, which writes it)")
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise ManifestError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: not a manifest")
            data = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and the int-digits limit are ValueErrors
            raise ManifestError(f"{path} is not valid JSON ({str(exc)[:200]})") from None
        manifest = cls.from_dict(data, str(path), folder)
        for name in manifest.referenced_files():
            confined(folder, name)
        return manifest
